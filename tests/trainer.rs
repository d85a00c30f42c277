//! The trainer on real data (the dev fixture in `tests/data`, built from real texts and embeddings): it learns, it is deterministic, it reports
//! and stops as documented.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;

use tacit_rm::backend::cpu::{full_loss, score};
use tacit_rm::data::Dataset;
use tacit_rm::eval::metrics::auroc;
use tacit_rm::feedback::flip::FlipRates;
use tacit_rm::feedback::propensity::PropensityModel;
use tacit_rm::feedback::Examples;
use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::objective::Prepared;
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind};
use tacit_rm::rng::Rng;
use tacit_rm::sim::{SimConfig, Simulator};
use tacit_rm::trainer::{train, TrainConfig, TrainRequest};

struct Split {
    train: Examples,
    val: Examples,
    test: Dataset,
}

fn fixture_split() -> Split {
    let ds = Dataset::load(&common::fixture()).unwrap();
    let parts = ds.split(&[0.6, 0.2, 0.2], 3);
    let (tr, va) = (ds.select(&parts[0]), ds.select(&parts[1]));
    let sim = Simulator::new(SimConfig::default(), tr.emb.view(), &tr.binary_labels(), 3).unwrap();
    let mut rng = Rng::new(3);
    let mut train = sim
        .simulate(tr.emb.view(), &tr.scaled_labels(), &tr.groups(), &mut rng)
        .unwrap()
        .examples;
    let mut val = sim
        .simulate(va.emb.view(), &va.scaled_labels(), &va.groups(), &mut rng)
        .unwrap()
        .examples;
    let pm = PropensityModel::fit(train.exposure.view(), &train.feedback, 1.0).unwrap();
    train.propensity = pm.predict(train.exposure.view()).unwrap();
    val.propensity = pm.predict(val.exposure.view()).unwrap();
    Split {
        train,
        val,
        test: ds.select(&parts[2]),
    }
}

fn quiet() -> impl FnMut(&tacit_rm::trainer::EpochReport) -> ControlFlow<()> {
    |_| ControlFlow::Continue(())
}

#[test]
fn every_objective_trains_on_real_data_and_is_deterministic() {
    let s = fixture_split();
    for kind in ObjectiveKind::ALL {
        let hc = HeadConfig {
            outputs: kind.head_outputs(),
            ..HeadConfig::new(384, &[16])
        };
        let head = Head::init(&hc, 1).unwrap();
        let obj = ObjectiveConfig::new(kind);
        let cfg = TrainConfig {
            epochs: 8,
            seed: 5,
            ..TrainConfig::default()
        };
        let a = train(
            &TrainRequest::new(&head, &obj, &s.train, &cfg).with_val(&s.val),
            &mut quiet(),
        )
        .unwrap();
        let b = train(
            &TrainRequest::new(&head, &obj, &s.train, &cfg).with_val(&s.val),
            &mut quiet(),
        )
        .unwrap();
        assert_eq!(a.head, b.head, "{kind}: same seed, same weights");
        assert!(a.head.is_finite());
        assert_ne!(a.head, head, "{kind}: training changed the weights");
        let first = a.report.epochs[0].train_loss;
        let best = a
            .report
            .epochs
            .iter()
            .map(|e| e.train_loss)
            .fold(f64::INFINITY, f64::min);
        assert!(
            best < first,
            "{kind}: training loss should fall ({first} → {best})"
        );
        assert_eq!(a.exposure_head.is_some(), kind == ObjectiveKind::Implicit);
        assert_eq!(a.report.flip.is_some(), kind.needs_flip_rates());
        let c = train(
            &TrainRequest::new(
                &head,
                &obj,
                &s.train,
                &TrainConfig {
                    seed: 6,
                    ..cfg.clone()
                },
            )
            .with_val(&s.val),
            &mut quiet(),
        )
        .unwrap();
        assert_ne!(a.head, c.head, "{kind}: another seed shuffles differently");
    }
}

#[test]
fn oracle_training_beats_chance_on_the_clean_test_split() {
    let s = fixture_split();
    let labels = s.test.binary_labels();
    let full = Examples::fully_labelled(s.train.emb.clone(), {
        // Recover the truth of the training rows from the fixture (the oracle's view).
        let ds = Dataset::load(&common::fixture()).unwrap();
        let parts = ds.split(&[0.6, 0.2, 0.2], 3);
        ds.select(&parts[0]).binary_labels()
    });
    let head = Head::init(&HeadConfig::new(384, &[]), 2).unwrap();
    let t = train(
        &TrainRequest::new(
            &head,
            &ObjectiveConfig::new(ObjectiveKind::Naive),
            &full,
            &TrainConfig {
                epochs: 20,
                ..Default::default()
            },
        ),
        &mut quiet(),
    )
    .unwrap();
    let before = auroc(&score(&head, s.test.emb.view()).unwrap(), &labels).unwrap();
    let after = auroc(&score(&t.head, s.test.emb.view()).unwrap(), &labels).unwrap();
    assert!(
        after > 0.55 && after > before + 0.03,
        "AUROC {before:.3} → {after:.3}"
    );
}

#[test]
fn progress_effective_sample_size_cancel_and_early_stopping() {
    let s = fixture_split();
    let head = Head::init(&HeadConfig::new(384, &[]), 1).unwrap();
    let mut seen = Vec::new();
    let cfg = TrainConfig {
        epochs: 30,
        patience: 2,
        ..TrainConfig::default()
    };
    let ips = train(
        &TrainRequest::new(
            &head,
            &ObjectiveConfig::new(ObjectiveKind::Ips),
            &s.train,
            &cfg,
        )
        .with_val(&s.val),
        &mut |e| {
            seen.push(e.clone());
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(seen.len(), ips.report.epochs.len());
    assert!(seen
        .iter()
        .enumerate()
        .all(|(i, e)| e.epoch == i + 1 && e.val_loss.is_some()));
    let n = s.train.len() as f64;
    assert!(
        seen[0].effective_sample_size > 1.0 && seen[0].effective_sample_size < n,
        "IPS weights lower the ESS"
    );
    let naive = train(
        &TrainRequest::new(
            &head,
            &ObjectiveConfig::new(ObjectiveKind::Naive),
            &s.train,
            &TrainConfig {
                epochs: 2,
                ..cfg.clone()
            },
        ),
        &mut quiet(),
    )
    .unwrap();
    assert!(
        (naive.report.epochs[0].effective_sample_size - n).abs() < 1e-6,
        "unit weights: ESS = n"
    );

    // Early stopping keeps the best validation epoch's weights: the returned head's
    // validation loss, recomputed independently, is the minimum of those reported.
    assert!(
        ips.report.stopped_early,
        "30 epochs at patience 2 should stop early here"
    );
    let best = ips
        .report
        .epochs
        .iter()
        .map(|e| e.val_loss.unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(
        ips.report.epochs[ips.report.best_epoch - 1]
            .val_loss
            .unwrap(),
        best
    );
    assert_eq!(
        ips.report.epochs.len(),
        ips.report.best_epoch + cfg.patience
    );
    let prepared = Prepared::new(
        &ObjectiveConfig::new(ObjectiveKind::Ips),
        &s.val,
        FlipRates::NONE,
        None,
    )
    .unwrap();
    let recomputed = full_loss(&ips.head, None, &prepared, &s.val).unwrap();
    assert!(
        (recomputed - best).abs() < 1e-9,
        "returned head: {recomputed} vs best {best}"
    );
    // Cancel after the third epoch.
    let cancelled = train(
        &TrainRequest::new(
            &head,
            &ObjectiveConfig::new(ObjectiveKind::Ips),
            &s.train,
            &cfg,
        ),
        &mut |e| {
            if e.epoch == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap();
    assert!(cancelled.report.cancelled && cancelled.report.epochs.len() == 3);
}

/// Anchor estimation on feedback with known flips, through a linear and a flexible head.
/// Synthetic data with a clean, learnable preference (so that anchor points exist); cross-
/// fitting must keep the noisy-label head from memorising its labels, which would report ρ ≈ 0.
#[test]
fn flip_rates_are_estimated_from_anchors_when_not_configured() {
    let (n, d) = (3000, 8);
    let emb = common::random_matrix(n, d, 17);
    let mut r = Rng::new(17);
    let (rho10, rho01) = (0.2, 0.1);
    let truth: Vec<f32> = emb
        .rows()
        .into_iter()
        .map(|x| (x[0] + x[1] > 0.0) as u8 as f32)
        .collect();
    let noisy: Vec<f32> = truth
        .iter()
        .map(|&y| {
            let flip = if y > 0.5 { rho10 } else { rho01 };
            if r.bernoulli(flip) {
                1.0 - y
            } else {
                y
            }
        })
        .collect();
    let ex = Examples::fully_labelled(emb, noisy);
    for hidden in [vec![], vec![32]] {
        let head = Head::init(&HeadConfig::new(d, &hidden), 1).unwrap();
        let obj = ObjectiveConfig {
            flip: None,
            ..ObjectiveConfig::new(ObjectiveKind::Noise)
        };
        let t = train(
            &TrainRequest::new(
                &head,
                &obj,
                &ex,
                &TrainConfig {
                    epochs: 40,
                    ..Default::default()
                },
            ),
            &mut quiet(),
        )
        .unwrap();
        let f = t.report.flip.unwrap();
        // Without cross-fitting a flexible head reported ρ ≈ 3e-4 here. Tail anchors are still
        // biased low (a logistic or ReLU head extrapolates past the noisy plateaus; see the
        // issue notes), so the check is "substantial noise seen on both sides, never inflated".
        assert!(f.rho10 > 0.03 && f.rho01 > 0.02, "hidden {hidden:?}: {f:?}");
        assert!(
            f.rho10 < rho10 + 0.05 && f.rho01 < rho01 + 0.05,
            "hidden {hidden:?}: {f:?}"
        );
        // And the noise-corrected head ranks the clean labels well despite 15 % flips.
        let a = auroc(&score(&t.head, ex.emb.view()).unwrap(), &truth).unwrap();
        assert!(a > 0.95, "hidden {hidden:?}: clean AUROC {a}");
    }
}
