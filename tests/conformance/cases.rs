//! The conformance cases, written once as async functions of a device and run on every
//! backend: natively as `cpu::<case>` and `gpu::<case>` (`tests/conformance.rs`), in the
//! browser as `webgpu::<case>` (`tests/web.rs`). Each checks the device against an
//! independent reference: the float64 MLP of `tests/common/reference.rs`, literals, or the
//! structure of the computation (submission and readback counts). None compares a backend
//! with itself or with another backend.
//!
//! [`conformance_cases!`] is the one list of cases; every host instantiates all of them.

use std::ops::ControlFlow;

use ndarray::Array2;
use tacit_rm::backend::Device;
use tacit_rm::feedback::Examples;
use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind, Prepared};
use tacit_rm::optim::AdamWConfig;
use tacit_rm::trainer::{train_async, TrainConfig, TrainRequest, Trained};

use crate::common::{self, reference};

/// Calls `$host!` with the name of every case: the one list all hosts run.
macro_rules! conformance_cases {
    ($host:ident) => {
        $host! {
            forward_matches_the_f64_reference,
            every_objective_gradient_matches_the_f64_reference,
            every_objective_gradient_with_a_logit_offset_matches_the_f64_reference,
            a_100_step_training_run_keeps_the_weights_of_its_best_validation_loss,
            one_submission_and_one_readback_per_epoch_and_per_score,
            auxiliary_fits_run_on_the_device_of_the_run,
            a_lost_device_falls_back_to_the_cpu_and_keeps_the_weights,
            trained_weights_round_trip_through_safetensors,
            bad_input_is_refused_with_its_code,
            each_scoring_call_is_served_where_its_placement_says_with_the_same_numbers,
        }
    };
}

async fn run(device: &Device, request: &TrainRequest<'_>) -> Trained {
    train_async(device, request, &mut |_| ControlFlow::Continue(()), || {
        std::future::ready(())
    })
    .await
    .unwrap()
}

/// The device's scores of `head` on `x` agree with the float64 reference within `rel`.
async fn assert_scores_match(device: &Device, head: &Head, x: &Array2<f32>, rel: f64, what: &str) {
    let got = device.score_async(head, x.view()).await.unwrap();
    let want = reference::scores(head, x);
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= rel * w.abs().max(1.0),
            "{} {what} row {i}: {g} vs f64 {w}",
            device.name()
        );
    }
}

/// `(submissions, readbacks)` of a GPU device so far; `None` on the CPU.
fn counts(device: &Device) -> Option<(u64, u64)> {
    use std::sync::atomic::Ordering;
    match device {
        Device::Cpu => None,
        Device::Gpu(ctx) => Some((
            ctx.counters.submissions.load(Ordering::SeqCst),
            ctx.counters.readbacks.load(Ordering::SeqCst),
        )),
    }
}

/// The objective's loss of `head` (and the exposure head) on `ex`, from float64 outputs.
fn reference_loss(head: &Head, exposure: Option<&Head>, prepared: &Prepared, ex: &Examples) -> f64 {
    let out = reference::forward(head, &ex.emb).mapv(|v| v as f32);
    let aux = exposure.map(|e| reference::forward(e, &ex.exposure).mapv(|v| v as f32));
    let rows: Vec<usize> = (0..ex.len()).collect();
    prepared
        .batch_loss(
            &rows,
            &prepared.pairs,
            out.view(),
            aux.as_ref().map(|a| a.view()),
        )
        .unwrap()
        .loss
}

/// Linear, one hidden ReLU layer and two tanh layers with two outputs; 1 to 1000 rows.
pub async fn forward_matches_the_f64_reference(device: &Device) {
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
    for cfg in &configs {
        let head = Head::init(cfg, 3).unwrap();
        for n in [1, 64, 1000] {
            let x = common::random_matrix(n, 384, n as u64) * 0.1;
            assert_scores_match(device, &head, &x, 1e-5, &format!("{cfg:?} n={n}")).await;
        }
    }
}

/// Every objective's parameter gradient against the float64 backward pass. One AdamW step
/// with β₁ = β₂ = 0, ε = 1 and no decay moves each parameter by −lr·g/(|g|+1), which
/// inverts exactly to g; so a one-batch, one-step training call exposes the device's full
/// gradient. The reference is the float64 MLP's backward pass of the objective's
/// `dL/d(outputs)` at the float64 outputs. `dr` is left out: its targets come from
/// auxiliary fits this case cannot rebuild (the training-run case covers it).
pub async fn every_objective_gradient_matches_the_f64_reference(device: &Device) {
    gradients_match_the_f64_reference(device, false).await
}

/// The same with a fixed per-row logit offset on the first output (the other part of a
/// two-part model, `src/personal.rs`; `shaders/add_offset.wgsl` on the GPU): the reference
/// adds the offsets to its float64 outputs before the objective's gradient, and the gradient
/// of the offset itself is never taken.
pub async fn every_objective_gradient_with_a_logit_offset_matches_the_f64_reference(
    device: &Device,
) {
    gradients_match_the_f64_reference(device, true).await
}

async fn gradients_match_the_f64_reference(device: &Device, with_offset: bool) {
    let mut train_set = common::feedback(96, 12, 13);
    if with_offset {
        let mut r = tacit_rm::rng::Rng::new(77);
        train_set.offset = (0..train_set.len())
            .map(|_| (1.5 * r.normal()) as f32)
            .collect();
    }
    let opt = AdamWConfig {
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
    for kind in ObjectiveKind::ALL {
        if kind == ObjectiveKind::Dr {
            continue;
        }
        let (head, objective) = common::setup(kind, 12, 6, 0.05, 5);
        let t = run(
            device,
            &TrainRequest::new(&head, &objective, &train_set, &tc),
        )
        .await;
        assert_eq!(t.report.steps, 1, "{kind}");
        let recovered: Vec<f64> = head
            .to_flat()
            .iter()
            .zip(t.head.to_flat())
            .map(|(&b, a)| {
                let u = -((a - b) as f64) / opt.lr;
                u / (1.0 - u.abs())
            })
            .collect();

        let prepared =
            Prepared::new(&objective, &train_set, objective.flip.unwrap(), None).unwrap();
        let rows: Vec<usize> = (0..train_set.len()).collect();
        let pairs = if kind.is_pairwise() {
            prepared.pairs.clone()
        } else {
            vec![]
        };
        // `implicit` trains an exposure head beside the reward head; the trainer starts it
        // linear, from seed `seed ^ 0xE1`.
        let exposure = kind.needs_exposure_head().then(|| {
            Head::init(
                &HeadConfig::new(train_set.exposure.ncols(), &[]),
                tc.seed ^ 0xE1,
            )
            .unwrap()
        });
        let aux = exposure
            .as_ref()
            .map(|e| reference::forward(e, &train_set.exposure).mapv(|v| v as f32));
        let mut out = reference::forward(&head, &train_set.emb).mapv(|v| v as f32);
        for (i, o) in train_set.offset.iter().enumerate() {
            out[[i, 0]] += o;
        }
        let g = prepared
            .batch_loss(&rows, &pairs, out.view(), aux.as_ref().map(|a| a.view()))
            .unwrap();
        let want = reference::backward(&head, &train_set.emb, &g.d_out.mapv(f64::from));
        let worst = reference::worst_error(recovered, &want);
        assert!(
            worst <= 1e-3,
            "{} {kind} (offsets: {with_offset}): gradient off by {worst} (relative)",
            device.name()
        );
    }
}

/// 100 AdamW steps of every objective (10 epochs of 10 batches, no early stopping): the run
/// takes exactly 100 steps, its loss falls, and it keeps the weights of its best validation
/// epoch: the float64 reference's loss of the returned head on the validation set is the
/// validation loss the device reported for that epoch.
pub async fn a_100_step_training_run_keeps_the_weights_of_its_best_validation_loss(
    device: &Device,
) {
    let train_set = common::feedback(640, 16, 7);
    let val_set = common::feedback(128, 16, 8);
    for kind in ObjectiveKind::ALL {
        let (head, objective) = common::setup(kind, 16, 8, 0.1, 2);
        // Pairwise batches are drawn over 320 pairs: 32 per batch gives 10 steps an epoch.
        let tc = TrainConfig {
            epochs: 10,
            batch_size: if kind.is_pairwise() { 32 } else { 64 },
            patience: 0,
            seed: 4,
            ..TrainConfig::default()
        };
        let request = TrainRequest::new(&head, &objective, &train_set, &tc).with_val(&val_set);
        let t = run(device, &request).await;
        let name = device.name();
        assert_eq!(t.report.steps, 100, "{name} {kind}");
        assert!(!t.report.fell_back_to_cpu, "{name} {kind}");
        let epochs = &t.report.epochs;
        assert_eq!(epochs.len(), 10, "{name} {kind}");
        assert!(
            epochs[9].train_loss < epochs[0].train_loss,
            "{name} {kind}: the loss did not fall: {epochs:?}"
        );
        let best = &epochs[t.report.best_epoch - 1];
        let reported = best.val_loss.unwrap();
        assert!(
            epochs.iter().all(|e| e.val_loss.unwrap() >= reported),
            "{name} {kind}: kept epoch {} is not the best: {epochs:?}",
            best.epoch
        );
        if kind == ObjectiveKind::Dr {
            continue; // its validation targets come from the auxiliary fits
        }
        let prepared = Prepared::new(&objective, &val_set, objective.flip.unwrap(), None).unwrap();
        let want = reference_loss(&t.head, t.exposure_head.as_ref(), &prepared, &val_set);
        assert!(
            (reported - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{name} {kind}: reported validation loss {reported}, f64 reference {want}"
        );
    }
}

/// A training call of k steps is one submission and one readback per epoch (the epoch's
/// summary together with the weights); scoring is one of each. The CPU has nothing to
/// count; there the trained head is checked against the reference only.
pub async fn one_submission_and_one_readback_per_epoch_and_per_score(device: &Device) {
    let train_set = common::feedback(640, 16, 3);
    let head = Head::init(&HeadConfig::new(16, &[8]), 1).unwrap();
    let objective = ObjectiveConfig::new(ObjectiveKind::Ips);
    let tc = TrainConfig {
        epochs: 3,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let before = counts(device);
    let t = run(
        device,
        &TrainRequest::new(&head, &objective, &train_set, &tc),
    )
    .await;
    assert_eq!(t.report.steps, 30);
    let after_training = counts(device);
    if let (Some(b), Some(a)) = (before, after_training) {
        assert_eq!(
            (a.0 - b.0, a.1 - b.1),
            (3, 3),
            "(submissions, readbacks) of 3 epochs"
        );
    }
    assert_scores_match(device, &t.head, &train_set.emb, 1e-5, "trained head").await;
    if let (Some(b), Some(a)) = (after_training, counts(device)) {
        assert_eq!(
            (a.0 - b.0, a.1 - b.1),
            (1, 1),
            "(submissions, readbacks) of a score"
        );
    }
}

/// Flip-rate anchors are estimated by two cross-fitted auxiliary runs on the run's device:
/// on a GPU that is 2 folds × 2 epochs and 2 scorings of the held-out folds, then the
/// main run's 2 epochs: 8 submissions. The estimated rates are valid flip rates.
pub async fn auxiliary_fits_run_on_the_device_of_the_run(device: &Device) {
    let train_set = common::feedback(256, 16, 21);
    let head = Head::init(&HeadConfig::new(16, &[8]), 1).unwrap();
    let objective = ObjectiveConfig::new(ObjectiveKind::NoiseIps);
    assert!(objective.flip.is_none(), "the anchors must be estimated");
    let tc = TrainConfig {
        epochs: 2,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let before = counts(device);
    let t = run(
        device,
        &TrainRequest::new(&head, &objective, &train_set, &tc),
    )
    .await;
    if let (Some(b), Some(a)) = (before, counts(device)) {
        assert_eq!((a.0 - b.0, a.1 - b.1), (8, 8), "(submissions, readbacks)");
    }
    let flip = t.report.flip.expect("estimated flip rates");
    for rho in [flip.rho01, flip.rho10] {
        assert!((0.0..0.5).contains(&rho), "{flip:?}");
    }
    assert_eq!(t.report.steps, 8);
}

/// A device lost mid-run: training finishes on the CPU from the last weights the GPU
/// returned, and scoring on the lost device falls back to the CPU with the right scores.
/// The CPU cannot be lost: there the same run completes on the CPU throughout.
pub async fn a_lost_device_falls_back_to_the_cpu_and_keeps_the_weights(device: &Device) {
    let train_set = common::feedback(320, 16, 5);
    let head = Head::init(&HeadConfig::new(16, &[8]), 1).unwrap();
    let objective = ObjectiveConfig::new(ObjectiveKind::Naive);
    let tc = TrainConfig {
        epochs: 6,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let mut after_two = None;
    let request = TrainRequest::new(&head, &objective, &train_set, &tc);
    let t = train_async(
        device,
        &request,
        &mut |e| {
            if e.epoch == 2 {
                if let Device::Gpu(ctx) = device {
                    ctx.simulate_device_loss();
                }
                after_two = Some(e.train_loss);
            }
            ControlFlow::Continue(())
        },
        || std::future::ready(()),
    )
    .await
    .unwrap();
    let gpu = matches!(device, Device::Gpu(_));
    assert_eq!(t.report.fell_back_to_cpu, gpu);
    assert_eq!(device.is_lost(), gpu);
    assert_eq!(t.report.epochs.len(), 6, "the run completed");
    assert!(t.head.is_finite());
    // It continued from the last weights: the loss kept falling rather than restarting.
    let third = t.report.epochs[2].train_loss;
    assert!(
        third < t.report.epochs[0].train_loss && third <= after_two.unwrap() * 1.05,
        "{:?}",
        t.report.epochs
    );
    assert_scores_match(device, &t.head, &train_set.emb, 1e-5, "after the loss").await;
}

/// Weights trained on the device survive a save/load round trip bit for bit and score as
/// the float64 reference does.
pub async fn trained_weights_round_trip_through_safetensors(device: &Device) {
    let train_set = common::feedback(320, 16, 9);
    let cfg = HeadConfig {
        outputs: 2,
        ..HeadConfig::new(16, &[8])
    };
    let head = Head::init(&cfg, 1).unwrap();
    let objective = ObjectiveConfig::new(ObjectiveKind::Beta);
    let tc = TrainConfig {
        epochs: 3,
        ..TrainConfig::default()
    };
    let t = run(
        device,
        &TrainRequest::new(&head, &objective, &train_set, &tc),
    )
    .await;
    assert_ne!(t.head, head, "training changed nothing");
    let w = tacit_rm::store::Weights::new(t.head.clone());
    let back = tacit_rm::store::from_bytes(&tacit_rm::store::to_bytes(&w).unwrap()).unwrap();
    assert_eq!(back.head, t.head);
    assert_scores_match(device, &back.head, &train_set.emb, 1e-5, "restored head").await;
}

/// Scoring refuses a wrong width and a non-finite value with their codes, and scores no
/// rows as no scores.
pub async fn bad_input_is_refused_with_its_code(device: &Device) {
    let head = Head::init(&HeadConfig::new(16, &[8]), 1).unwrap();
    let code = |r: tacit_rm::Result<Vec<f32>>| r.unwrap_err().code().as_str();
    let wrong = common::random_matrix(2, 15, 1);
    assert_eq!(
        code(device.score_async(&head, wrong.view()).await),
        "dim_mismatch"
    );
    let mut nan = common::random_matrix(2, 16, 1);
    nan[[0, 0]] = f32::NAN;
    assert_eq!(
        code(device.score_async(&head, nan.view()).await),
        "non_finite_input"
    );
    let none = Array2::<f32>::zeros((0, 16));
    assert!(device
        .score_async(&head, none.view())
        .await
        .unwrap()
        .is_empty());
}

/// The host's clock in milliseconds (`Instant` does not exist in the browser's wasm32).
fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1e3
    }
}

/// `auto`'s placement (DESIGN §11): batches up to the crossover on the CPU path, larger ones
/// on the GPU, everything on the CPU path for a software adapter; the scores match the
/// float64 reference whichever device serves, and the GPU's readback counter shows which
/// did (independent of what `Served` claims). The calibration measures finite times.
pub async fn each_scoring_call_is_served_where_its_placement_says_with_the_same_numbers(
    device: &Device,
) {
    use tacit_rm::backend::placement::{self, Placement, ServedBecause, ServedOn};
    use tacit_rm::model::{ModelSpec, RewardModel};
    let spec = ModelSpec {
        dim: 384,
        hidden: vec![128],
        objective: ObjectiveKind::Pairwise,
        ..ModelSpec::default()
    };
    let mut m = RewardModel::new(&spec, device.clone()).unwrap();
    let head = m.weights().head.clone();
    let gpu = matches!(device, Device::Gpu(_));
    let cases = [
        (16, false, 4, false),
        (16, false, 16, false),
        (16, false, 17, true),
        (16, false, 300, true),
        (0, true, 300, false),
    ];
    for (cpu_up_to_rows, software_adapter, n, large) in cases {
        m.set_placement(Placement::Auto {
            cpu_up_to_rows,
            software_adapter,
        });
        let x = common::random_matrix(n, 384, n as u64) * 0.1;
        let before = counts(device);
        let (got, served) = m.score_placed(x.view(), false).await.unwrap();
        let after = counts(device);
        let want = reference::scores(&head, &x);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0),
                "n={n} row {i}: {g} vs f64 {w} ({served:?})"
            );
        }
        let on_gpu = gpu && large;
        let reason = match (gpu, software_adapter, large) {
            (false, _, _) => ServedBecause::OnlyDevice,
            (true, true, _) => ServedBecause::SoftwareAdapter,
            (true, false, true) => ServedBecause::LargeBatch,
            (true, false, false) => ServedBecause::SmallBatch,
        };
        let on = if on_gpu { ServedOn::Gpu } else { ServedOn::Cpu };
        assert_eq!((served.device, served.reason, served.rows), (on, reason, n));
        if let (Some((_, r0)), Some((_, r1))) = (before, after) {
            assert_eq!(r1 - r0, u64::from(on_gpu), "GPU readbacks for n={n}");
        }
        m.note_served(served);
        assert_eq!(m.stats().last_score, Some(served));
    }
    // A fixed placement serves every call on the model's device.
    m.set_placement(Placement::Fixed);
    let x = common::random_matrix(4, 384, 9) * 0.1;
    let (_, served) = m.score_placed(x.view(), false).await.unwrap();
    let on = if gpu { ServedOn::Gpu } else { ServedOn::Cpu };
    assert_eq!(
        (served.device, served.reason),
        (on, ServedBecause::OnlyDevice)
    );
    if gpu {
        let c = placement::calibrate(device, &head, &now_ms).await.unwrap();
        let all = [c.cpu_ms.0, c.cpu_ms.1, c.gpu_ms.0, c.gpu_ms.1];
        assert!(all.iter().all(|t| t.is_finite() && *t >= 0.0), "{c:?}");
        // More rows cost no less on either device (the calibration measured, not guessed).
        assert!(
            c.cpu_ms.1 >= c.cpu_ms.0 && c.gpu_ms.1 >= c.gpu_ms.0 * 0.5,
            "{c:?}"
        );
    }
}
