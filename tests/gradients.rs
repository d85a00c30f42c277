//! Finite-difference checks of every objective's analytic gradient with respect to the head
//! outputs (and the exposure logits for `implicit`), and of a whole training step's gradient
//! with respect to the head parameters.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use ndarray::{Array2, Axis};
use tacit_rm::backend::cpu;
use tacit_rm::feedback::flip::FlipRates;
use tacit_rm::feedback::{Examples, Pair};
use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind, Prepared};
use tacit_rm::rng::Rng;

/// A feedback set exercising every field: reactions, positives, explicit labels, varied
/// propensities, exposure features, pairs with OCRM log-probabilities.
fn examples(n: usize, seed: u64) -> Examples {
    let mut r = Rng::new(seed);
    let emb = common::random_matrix(n, 6, seed);
    let feedback: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
    let explicit: Vec<f32> = (0..n)
        .map(|i| (feedback[i] > 0.0 && r.bernoulli(0.5)) as u8 as f32)
        .collect();
    let observed = explicit.clone();
    let propensity: Vec<f32> = (0..n).map(|_| (0.05 + 0.9 * r.uniform()) as f32).collect();
    let exposure = common::random_matrix(n, 3, seed + 1);
    let pairs = (0..n / 2)
        .map(|k| Pair {
            winner: 2 * k,
            loser: 2 * k + 1,
            logp_new: Some([-(r.uniform() * 5.0) as f32, -(r.uniform() * 5.0) as f32]),
            logp_old: Some([-(r.uniform() * 5.0) as f32, -(r.uniform() * 5.0) as f32]),
        })
        .collect();
    Examples {
        emb,
        observed,
        feedback,
        explicit,
        propensity,
        exposure,
        pairs,
        offset: Vec::new(),
    }
}

fn check_close(what: &str, fd: f64, an: f64) {
    assert!(
        (fd - an).abs() <= 2e-3 * (1.0 + fd.abs()),
        "{what}: finite difference {fd} vs analytic {an}"
    );
}

/// Checks dL/d(out) and dL/d(aux) of `prepared` at `out`, `aux` by central differences.
fn check_objective(
    prepared: &Prepared,
    rows: &[usize],
    pairs: &[(usize, usize, f32)],
    out: &Array2<f32>,
    aux: Option<&Array2<f32>>,
) {
    let name = prepared.kind().name();
    let base = prepared
        .batch_loss(rows, pairs, out.view(), aux.map(|a| a.view()))
        .unwrap();
    let loss_at = |o: &Array2<f32>, a: Option<&Array2<f32>>| {
        prepared
            .batch_loss(rows, pairs, o.view(), a.map(|a| a.view()))
            .unwrap()
            .loss
    };
    let h = 1e-3f32;
    for idx in ndarray::indices(out.raw_dim()) {
        let (mut up, mut down) = (out.clone(), out.clone());
        up[idx] += h;
        down[idx] -= h;
        let fd = (loss_at(&up, aux) - loss_at(&down, aux)) / (2.0 * h as f64);
        check_close(&format!("{name} d/dout{idx:?}"), fd, base.d_out[idx] as f64);
    }
    if let (Some(a), Some(da)) = (aux, base.d_aux.as_ref()) {
        for idx in ndarray::indices(a.raw_dim()) {
            let (mut up, mut down) = (a.clone(), a.clone());
            up[idx] += h;
            down[idx] -= h;
            let fd = (loss_at(out, Some(&up)) - loss_at(out, Some(&down))) / (2.0 * h as f64);
            check_close(&format!("{name} d/daux{idx:?}"), fd, da[idx] as f64);
        }
    }
}

#[test]
fn every_objective_gradient_matches_finite_differences() {
    let ex = examples(12, 7);
    let imputed: Vec<f32> = (0..12).map(|i| 0.2 + 0.05 * i as f32).collect();
    for kind in ObjectiveKind::ALL {
        for nonneg in [false, true] {
            let cfg = ObjectiveConfig {
                kind,
                nonneg,
                flip: Some(FlipRates {
                    rho10: 0.15,
                    rho01: 0.1,
                }),
                ..ObjectiveConfig::default()
            };
            let prepared = Prepared::new(&cfg, &ex, cfg.flip.unwrap(), Some(&imputed)).unwrap();
            let rows: Vec<usize> = (0..ex.len()).collect();
            let out = common::random_matrix(ex.len(), kind.head_outputs(), 11) * 1.5;
            let aux = kind
                .needs_exposure_head()
                .then(|| common::random_matrix(ex.len(), 1, 12));
            check_objective(&prepared, &rows, &prepared.pairs, &out, aux.as_ref());
        }
    }
}

#[test]
fn gradients_hold_in_the_tails() {
    // Confident logits, where naive formulas lose precision.
    let ex = examples(8, 3);
    for kind in [
        ObjectiveKind::Naive,
        ObjectiveKind::Implicit,
        ObjectiveKind::Beta,
        ObjectiveKind::Pairwise,
    ] {
        let cfg = ObjectiveConfig {
            kind,
            nonneg: false,
            ..ObjectiveConfig::new(kind)
        };
        let prepared = Prepared::new(&cfg, &ex, FlipRates::NONE, None).unwrap();
        let rows: Vec<usize> = (0..ex.len()).collect();
        let out = common::random_matrix(ex.len(), kind.head_outputs(), 5) * 6.0;
        let aux = kind
            .needs_exposure_head()
            .then(|| common::random_matrix(ex.len(), 1, 6) * 6.0);
        check_objective(&prepared, &rows, &prepared.pairs, &out, aux.as_ref());
    }
}

#[test]
fn ocrm_weights_match_the_direct_formula() {
    let ex = examples(6, 9);
    let cfg = ObjectiveConfig {
        kind: ObjectiveKind::Pairwise,
        ..ObjectiveConfig::default()
    };
    let prepared = Prepared::new(&cfg, &ex, FlipRates::NONE, None).unwrap();
    for (p, &(_, _, w)) in ex.pairs.iter().zip(&prepared.pairs) {
        let (n, o) = (p.logp_new.unwrap(), p.logp_old.unwrap());
        let rho = |k: usize| {
            let (pn, po) = ((n[k] as f64).exp(), (o[k] as f64).exp());
            pn / (cfg.ocrm.alpha * pn + (1.0 - cfg.ocrm.alpha) * po)
        };
        let direct = (rho(0) * rho(1)).powf(cfg.ocrm.beta);
        assert!(
            (w as f64 - direct).abs() < 1e-5 * direct.max(1.0),
            "{w} vs {direct}"
        );
    }
}

/// The whole chain: objective gradient through the head's backward pass, against finite
/// differences of the batch loss in every parameter.
#[test]
fn training_gradient_through_the_head_matches_finite_differences() {
    let ex = examples(10, 21);
    for kind in [
        ObjectiveKind::Ips,
        ObjectiveKind::Beta,
        ObjectiveKind::Pairwise,
    ] {
        let cfg = ObjectiveConfig {
            kind,
            nonneg: false,
            ..ObjectiveConfig::new(kind)
        };
        let prepared = Prepared::new(&cfg, &ex, FlipRates::NONE, None).unwrap();
        let hc = HeadConfig {
            dim: 6,
            hidden: vec![5],
            activation: Activation::Tanh,
            outputs: kind.head_outputs(),
        };
        let mut head = Head::init(&hc, 4).unwrap();
        let rows: Vec<usize> = (0..ex.len()).collect();
        let x = ex.emb.select(Axis(0), &rows);
        let loss = |h: &Head| {
            let out = cpu::forward(h, x.view()).unwrap();
            prepared
                .batch_loss(&rows, &prepared.pairs, out.view(), None)
                .unwrap()
                .loss
        };
        let (out, cache) = cpu::forward_train(&head, x.view());
        let g = prepared
            .batch_loss(&rows, &prepared.pairs, out.view(), None)
            .unwrap();
        let grads = cpu::backward(&head, &cache, g.d_out.view());
        let analytic: Vec<f32> = grads.tensors().iter().flat_map(|t| t.to_vec()).collect();
        let mut k = 0;
        for t in 0..head.tensors().len() {
            for i in 0..head.tensors()[t].len() {
                let orig = head.tensors()[t][i];
                head.tensors_mut()[t][i] = orig + 1e-3;
                let up = loss(&head);
                head.tensors_mut()[t][i] = orig - 1e-3;
                let down = loss(&head);
                head.tensors_mut()[t][i] = orig;
                check_close(
                    &format!("{kind} param {t}/{i}"),
                    (up - down) / 2e-3,
                    analytic[k] as f64,
                );
                k += 1;
            }
        }
    }
}
