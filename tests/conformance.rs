//! One conformance suite run against every backend (as burn does): the same test functions
//! check the CPU reference and the WGSL backend against independent references and against
//! each other. A machine without a GPU adapter skips the GPU half and says so, unless
//! `TACIT_REQUIRE_GPU=1` or `CI` is set (as `cargo xtask test` and CI do): then it fails.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tacit_rm::backend::gpu::GpuContext;
use tacit_rm::backend::Device;
use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind};
use tacit_rm::trainer::{score, score_on, train_on, TrainConfig};

fn gpu() -> Option<Arc<GpuContext>> {
    match GpuContext::shared() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            let required = std::env::var("TACIT_REQUIRE_GPU").is_ok_and(|v| v == "1")
                || std::env::var("CI").is_ok();
            assert!(!required, "no GPU adapter, and this run requires one: {e}");
            eprintln!("SKIPPED the GPU half of this test: {e}");
            None
        }
    }
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpu().map(Device::Gpu));
    d
}

#[test]
fn forward_matches_the_cpu_reference() {
    let configs = [
        HeadConfig::new(384, &[]),
        HeadConfig::new(384, &[128]),
        HeadConfig {
            dim: 384,
            hidden: vec![32, 8],
            activation: Activation::Tanh,
            outputs: 2,
        },
    ];
    for device in devices() {
        for cfg in &configs {
            let head = Head::init(cfg, 3).unwrap();
            for n in [1, 64, 1000] {
                let x = common::random_matrix(n, 384, n as u64) * 0.1;
                let reference = score(&head, x.view()).unwrap();
                let got = score_on(&device, &head, x.view()).unwrap();
                assert_eq!(got.len(), n);
                for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
                    assert!(
                        common::close(*g, *r, 1e-5),
                        "{} {cfg:?} n={n} row {i}: {g} vs {r}",
                        device.name()
                    );
                }
            }
        }
    }
}

/// 100 AdamW steps of every objective: the final training loss agrees across backends
/// within 1e-3 relative, and so do the trained heads' scores.
#[test]
fn a_100_step_training_run_agrees_for_every_objective() {
    let Some(ctx) = gpu() else { return };
    let train_set = common::feedback(640, 16, 7);
    let val_set = common::feedback(128, 16, 8);
    for kind in ObjectiveKind::ALL {
        let (head, objective) = common::setup(kind, 16, 8, 0.1, 2);
        // Pairwise batches are drawn over 320 pairs: 32 per batch gives 10 steps an epoch.
        let batch_size = if kind.is_pairwise() { 32 } else { 64 };
        let tc = TrainConfig {
            epochs: 10,
            batch_size,
            patience: 0,
            seed: 4,
            ..TrainConfig::default()
        };
        let run = |device: &Device| {
            train_on(
                device,
                &head,
                &objective,
                &train_set,
                Some(&val_set),
                &tc,
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap()
        };
        let cpu = run(&Device::Cpu);
        let gpu = run(&Device::Gpu(ctx.clone()));
        assert_eq!(cpu.report.steps, 100, "{kind}");
        assert_eq!(gpu.report.steps, 100, "{kind}");
        let (a, b) = (
            gpu.report.final_loss().unwrap(),
            cpu.report.final_loss().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-3 * b.abs().max(1e-3),
            "{kind}: final loss gpu {a} vs cpu {b}"
        );
        for (e_gpu, e_cpu) in gpu.report.epochs.iter().zip(&cpu.report.epochs) {
            let (va, vb) = (e_gpu.val_loss.unwrap(), e_cpu.val_loss.unwrap());
            assert!(
                (va - vb).abs() <= 1e-3 * vb.abs().max(1e-3),
                "{kind} epoch {}: val loss gpu {va} vs cpu {vb}",
                e_cpu.epoch
            );
        }
        let x = val_set.emb.view();
        let (sa, sb) = (score(&gpu.head, x).unwrap(), score(&cpu.head, x).unwrap());
        let worst = sa
            .iter()
            .zip(&sb)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-2, "{kind}: trained scores differ by {worst}");
        assert!(!gpu.report.fell_back_to_cpu);
    }
}

/// A training call of k steps is one submission and at most one readback per epoch (the
/// epoch's summary together with the weights); scoring is one of each.
#[test]
fn one_submission_and_one_readback_per_epoch() {
    // A context of its own, so that parallel tests do not touch the counters.
    let Some(_) = gpu() else { return };
    let ctx = Arc::new(pollster::block_on(GpuContext::new()).unwrap());
    let train_set = common::feedback(640, 16, 3);
    let head = Head::init(&HeadConfig::new(16, &[8]), 1).unwrap();
    let objective = ObjectiveConfig::new(ObjectiveKind::Ips);
    let tc = TrainConfig {
        epochs: 3,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let t = train_on(
        &Device::Gpu(ctx.clone()),
        &head,
        &objective,
        &train_set,
        None,
        &tc,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(t.report.steps, 30);
    assert_eq!(
        ctx.counters.submissions.load(Ordering::SeqCst),
        3,
        "one submission per epoch of 10 steps"
    );
    assert_eq!(
        ctx.counters.readbacks.load(Ordering::SeqCst),
        3,
        "one readback per epoch of 10 steps"
    );
    let before = ctx.counters.readbacks.load(Ordering::SeqCst);
    score_on(&Device::Gpu(ctx.clone()), &t.head, train_set.emb.view()).unwrap();
    assert_eq!(ctx.counters.readbacks.load(Ordering::SeqCst), before + 1);
}

/// A device lost mid-run: training finishes on the CPU from the last weights the GPU
/// returned, and later GPU calls fail with a typed error instead of panicking.
#[test]
fn a_lost_device_falls_back_to_the_cpu_and_keeps_the_weights() {
    let Some(_) = gpu() else { return };
    let ctx = Arc::new(pollster::block_on(GpuContext::new()).unwrap());
    let train_set = common::feedback(320, 16, 5);
    let head = Head::init(&HeadConfig::new(16, &[8]), 1).unwrap();
    let objective = ObjectiveConfig::new(ObjectiveKind::Naive);
    let tc = TrainConfig {
        epochs: 6,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let lose = ctx.clone();
    let mut after_two = None;
    let t = train_on(
        &Device::Gpu(ctx.clone()),
        &head,
        &objective,
        &train_set,
        None,
        &tc,
        &mut |e| {
            if e.epoch == 2 {
                lose.simulate_device_loss();
                after_two = Some(e.train_loss);
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert!(t.report.fell_back_to_cpu);
    assert_eq!(t.report.epochs.len(), 6, "the run completed");
    assert!(t.head.is_finite());
    // It continued from the GPU's weights: the loss kept falling rather than restarting.
    let third = t.report.epochs[2].train_loss;
    assert!(
        third < t.report.epochs[0].train_loss && third <= after_two.unwrap() * 1.05,
        "{:?}",
        t.report.epochs
    );
    let err = score_on(&Device::Gpu(ctx), &t.head, train_set.emb.view()).unwrap_err();
    assert_eq!(err.code().as_str(), "device_lost");
}

/// Weights trained on the GPU survive a save/load round trip and score the same on both backends.
#[test]
fn gpu_trained_weights_round_trip_through_safetensors() {
    let Some(ctx) = gpu() else { return };
    let train_set = common::feedback(320, 16, 9);
    let head = Head::init(
        &HeadConfig {
            outputs: 2,
            ..HeadConfig::new(16, &[8])
        },
        1,
    )
    .unwrap();
    let objective = ObjectiveConfig::new(ObjectiveKind::Beta);
    let tc = TrainConfig {
        epochs: 3,
        ..TrainConfig::default()
    };
    let device = Device::Gpu(ctx);
    let t = train_on(
        &device,
        &head,
        &objective,
        &train_set,
        None,
        &tc,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let w = tacit_rm::store::Weights::new(t.head.clone());
    let back = tacit_rm::store::from_bytes(&tacit_rm::store::to_bytes(&w).unwrap()).unwrap();
    assert_eq!(back.head, t.head);
    for d in devices() {
        let s = score_on(&d, &back.head, train_set.emb.view()).unwrap();
        let r = score(&t.head, train_set.emb.view()).unwrap();
        assert!(
            s.iter().zip(&r).all(|(a, b)| common::close(*a, *b, 1e-5)),
            "{}",
            d.name()
        );
    }
    // Bad input is rejected the same way on every backend.
    for d in devices() {
        let wrong = common::random_matrix(2, 15, 1);
        assert_eq!(
            score_on(&d, &back.head, wrong.view())
                .unwrap_err()
                .code()
                .as_str(),
            "dim_mismatch"
        );
        let mut nan = common::random_matrix(2, 16, 1);
        nan[[0, 0]] = f32::NAN;
        assert_eq!(
            score_on(&d, &back.head, nan.view())
                .unwrap_err()
                .code()
                .as_str(),
            "non_finite_input"
        );
        assert!(
            score_on(&d, &back.head, ndarray::Array2::zeros((0, 16)).view())
                .unwrap()
                .is_empty()
        );
    }
}

/// `tacit eval --backend gpu` reproduces the CPU table: every method's per-seed AUROC on the
/// real fixture agrees far inside the seed-to-seed spread.
#[test]
fn eval_on_the_gpu_reproduces_the_cpu_table() {
    let Some(ctx) = gpu() else { return };
    let ds = tacit_rm::data::Dataset::load(&common::fixture()).unwrap();
    let cfg = tacit_rm::eval::EvalConfig {
        seeds: 2,
        methods: tacit_rm::eval::Method::parse_list(
            "naive,ips,noise-ips,implicit,pairwise,beta,oracle",
        )
        .unwrap(),
        ..Default::default()
    };
    let cpu = tacit_rm::eval::run_on(&Device::Cpu, &ds, &cfg, &mut |_, _, _| {}).unwrap();
    let gpu = tacit_rm::eval::run_on(&Device::Gpu(ctx), &ds, &cfg, &mut |_, _, _| {}).unwrap();
    for ((name, c), (_, g)) in cpu.rows.iter().zip(&gpu.rows) {
        for (sc, sg) in c.per_seed.iter().zip(&g.per_seed) {
            assert!(
                (sc.auroc - sg.auroc).abs() < 0.005,
                "{name}: cpu {} vs gpu {}",
                sc.auroc,
                sg.auroc
            );
        }
        // The seed spread the table reports is an order of magnitude larger than that.
        assert!((c.auroc.mean - g.auroc.mean).abs() < 0.005, "{name}");
    }
}

/// Every objective's gradient, backend against backend. One AdamW step with β₁ = β₂ = 0,
/// ε = 1 and no decay moves each parameter by −lr·g/(|g|+1), which inverts exactly to g; so a
/// one-batch, one-step training call exposes the full parameter gradient of each backend.
/// The CPU's recovered gradient is first checked against the analytic one (backward pass of
/// the objective's gradient), so that the comparison is anchored to the reference.
#[test]
fn every_objective_gradient_agrees_across_backends() {
    use tacit_rm::backend::cpu;
    use tacit_rm::objective::Prepared;
    let train_set = common::feedback(96, 12, 13);
    let opt = tacit_rm::optim::AdamWConfig {
        lr: 0.1,
        beta1: 0.0,
        beta2: 0.0,
        eps: 1.0,
        weight_decay: 0.0,
    };
    let tc = TrainConfig {
        epochs: 1,
        batch_size: 96,
        optimizer: opt,
        patience: 0,
        seed: 1,
    };
    let recover = |before: &Head, after: &Head| -> Vec<f64> {
        before
            .to_flat()
            .iter()
            .zip(after.to_flat())
            .map(|(&b, a)| {
                let u = -((a - b) as f64) / opt.lr;
                u / (1.0 - u.abs())
            })
            .collect()
    };
    for kind in ObjectiveKind::ALL {
        let (head, objective) = common::setup(kind, 12, 6, 0.05, 5);
        let mut per_device = Vec::new();
        for device in devices() {
            let t = train_on(
                &device,
                &head,
                &objective,
                &train_set,
                None,
                &tc,
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap();
            assert_eq!(t.report.steps, 1);
            per_device.push((device.name(), recover(&head, &t.head)));
        }
        // Anchor: the CPU-recovered gradient equals the analytic one (objectives without
        // auxiliary fits or an exposure head, whose inputs this test cannot rebuild).
        if !matches!(kind, ObjectiveKind::Dr | ObjectiveKind::Implicit) {
            let prepared =
                Prepared::new(&objective, &train_set, objective.flip.unwrap(), None).unwrap();
            let rows: Vec<usize> = (0..train_set.len()).collect();
            let pairs = if kind.is_pairwise() {
                prepared.pairs.clone()
            } else {
                vec![]
            };
            let (out, cache) = cpu::forward_train(&head, train_set.emb.view());
            let g = prepared
                .batch_loss(&rows, &pairs, out.view(), None)
                .unwrap();
            let analytic: Vec<f64> = cpu::backward(&head, &cache, g.d_out.view())
                .to_flat()
                .iter()
                .map(|&v| v as f64)
                .collect();
            let scale = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = per_device[0]
                .1
                .iter()
                .zip(&analytic)
                .map(|(r, a)| (r - a).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= 1e-3 * scale,
                "{kind}: recovered CPU gradient off by {worst} (scale {scale})"
            );
        }
        if let [(_, cpu_g), (_, gpu_g)] = &per_device[..] {
            let scale = cpu_g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = cpu_g
                .iter()
                .zip(gpu_g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= 1e-3 * scale,
                "{kind}: GPU gradient differs by {worst} (scale {scale})"
            );
        }
    }
}
