//! The trainer: shuffled minibatches, AdamW, early stopping on a validation split, progress
//! callbacks; deterministic under a seed. It also fits the auxiliary heads some objectives
//! need before the main run (a noisy-label head for flip-rate anchors, an imputation head
//! for `dr`) with this same loop.

use std::ops::ControlFlow;

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::backend::{cpu, Device};
use crate::error::{check, Error, Result};
use crate::feedback::flip::{estimate_flip_rates, FlipRates};
use crate::feedback::Examples;
use crate::head::{Head, HeadConfig};
use crate::math::sigmoid;
use crate::objective::{LossGrad, ObjectiveConfig, ObjectiveKind, Prepared};
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: AdamWConfig,
    /// Stop after this many epochs without a better validation loss (needs a validation set;
    /// 0 disables early stopping, and the best validation epoch is still the one kept).
    pub patience: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 40,
            batch_size: 64,
            optimizer: AdamWConfig::default(),
            patience: 5,
            seed: 0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if !(1..=100_000).contains(&self.epochs) {
            return Err(Error::InvalidConfig(format!(
                "epochs = {} is outside 1..=100000",
                self.epochs
            )));
        }
        if !(1..=1 << 20).contains(&self.batch_size) {
            return Err(Error::InvalidConfig(format!(
                "batch_size = {} is outside 1..=1048576",
                self.batch_size
            )));
        }
        self.optimizer.validate()
    }
}

/// What the trainer reports after each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    /// Kish's effective sample size of the objective's importance weights.
    pub effective_sample_size: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochReport>,
    /// Epoch whose weights were kept (best validation loss, or the last).
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub cancelled: bool,
    /// Flip rates used (configured or estimated), for objectives that use them.
    pub flip: Option<FlipRates>,
    pub steps: u64,
    /// The GPU device was lost during the run and training finished on the CPU.
    pub fell_back_to_cpu: bool,
}

impl TrainReport {
    pub fn final_loss(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.train_loss)
    }
}

/// A trained model: the reward head, plus the exposure head of `implicit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    pub head: Head,
    pub exposure_head: Option<Head>,
    pub report: TrainReport,
}

/// Progress callback: return `ControlFlow::Break(())` to stop after this epoch.
pub type Progress<'a> = &'a mut dyn FnMut(&EpochReport) -> ControlFlow<()>;

/// Trains `head` (its current weights are the starting point) on `train` with `objective`,
/// on the CPU reference backend.
pub fn train(
    head: &Head,
    objective: &ObjectiveConfig,
    train: &Examples,
    val: Option<&Examples>,
    config: &TrainConfig,
    progress: Progress<'_>,
) -> Result<Trained> {
    train_on(&Device::Cpu, head, objective, train, val, config, progress)
}

/// Like [`train`], on the given device, blocking until the run ends (the browser cannot
/// block: there a GPU device is refused with `invalid_config`, and [`train_async`] is the
/// entry point). Auxiliary fits (flip-rate anchors, `dr` imputation) run on the CPU; on a
/// lost GPU device the run carries on on the CPU from the last weights.
pub fn train_on(
    device: &Device,
    head: &Head,
    objective: &ObjectiveConfig,
    train: &Examples,
    val: Option<&Examples>,
    config: &TrainConfig,
    progress: Progress<'_>,
) -> Result<Trained> {
    #[cfg(target_arch = "wasm32")]
    if matches!(device, Device::Gpu(_)) {
        return Err(blocking_on_the_web());
    }
    let run = train_async(
        device,
        head,
        objective,
        train,
        val,
        config,
        progress,
        || std::future::ready(()),
    );
    #[cfg(not(target_arch = "wasm32"))]
    return pollster::block_on(run);
    #[cfg(target_arch = "wasm32")]
    run_ready(run)
}

/// Polls a future that cannot be pending (the CPU engine's) to its end: the browser's main
/// thread cannot block, and there is nothing to wait for.
#[cfg(target_arch = "wasm32")]
fn run_ready<T>(fut: impl std::future::Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the CPU engine never waits"),
    }
}

/// The training run itself, async so that the browser never blocks: the GPU engine awaits
/// its one readback per epoch, and `between_epochs` lets the host yield (a page repaints
/// its progress bar) after each epoch's progress callback.
#[allow(clippy::too_many_arguments)]
pub async fn train_async<Y: std::future::Future<Output = ()>>(
    device: &Device,
    head: &Head,
    objective: &ObjectiveConfig,
    train: &Examples,
    val: Option<&Examples>,
    config: &TrainConfig,
    progress: Progress<'_>,
    mut between_epochs: impl FnMut() -> Y,
) -> Result<Trained> {
    config.validate()?;
    objective.validate()?;
    head.config.validate()?;
    train.validate()?;
    check::non_empty("training examples", train.len())?;
    check::len("training embedding width", head.config.dim, train.dim())?;
    check::len(
        "head outputs for this objective",
        objective.kind.head_outputs(),
        head.config.outputs,
    )?;
    if let Some(v) = val {
        v.validate()?;
        check::non_empty("validation examples", v.len())?;
        check::len("validation embedding width", head.config.dim, v.dim())?;
        check::len(
            "validation exposure features",
            train.exposure.ncols(),
            v.exposure.ncols(),
        )?;
    }

    let kind = objective.kind;
    let flip = if kind.needs_flip_rates() {
        Some(match objective.flip {
            Some(f) => f,
            None => estimate_flips(head, objective, train, config)?,
        })
    } else {
        None
    };
    let (imputed_train, imputed_val) = if kind == ObjectiveKind::Dr {
        let others: Vec<&Examples> = val.into_iter().collect();
        let flip = flip.unwrap_or(FlipRates::NONE);
        let (on_train, mut on_val) = cross_fit(
            head,
            objective,
            ObjectiveKind::NoiseIps,
            flip,
            train,
            &others,
            config,
        )?;
        (Some(on_train), on_val.pop())
    } else {
        (None, None)
    };
    let flip_used = flip.unwrap_or(FlipRates::NONE);
    let prepared = Prepared::new(objective, train, flip_used, imputed_train.as_deref())?;
    let prepared_val = match val {
        Some(v) if !(kind.is_pairwise() && v.pairs.is_empty()) => Some(Prepared::new(
            objective,
            v,
            flip_used,
            imputed_val.as_deref(),
        )?),
        _ => None,
    };

    let exposure = if kind.needs_exposure_head() {
        Some(Head::init(
            &HeadConfig::new(train.exposure.ncols(), &[]),
            config.seed ^ 0xE1,
        )?)
    } else {
        None
    };
    let data = RunData {
        prepared: &prepared,
        prepared_val: prepared_val.as_ref(),
        train,
        val,
        optimizer: config.optimizer,
    };
    let mut engine = match device {
        Device::Cpu => AnyEngine::Cpu(CpuEngine::new(data, head.clone(), exposure.clone())),
        Device::Gpu(ctx) => AnyEngine::Gpu(crate::backend::gpu::GpuEngine::new(
            ctx.clone(),
            data,
            head,
            exposure.as_ref(),
            config,
        )?),
    };
    let mut rng = Rng::new(config.seed);
    let ess = prepared.effective_sample_size();

    let mut report = TrainReport {
        epochs: Vec::new(),
        best_epoch: 0,
        stopped_early: false,
        cancelled: false,
        flip,
        steps: 0,
        fell_back_to_cpu: false,
    };
    let mut current = (head.clone(), exposure);
    let mut best: Option<(f64, Head, Option<Head>)> = None;
    let mut since_best = 0;
    for epoch in 1..=config.epochs {
        let batches = make_batches(&prepared, train.len(), config.batch_size, &mut rng);
        let outcome = match engine.epoch(&batches, prepared_val.is_some()).await {
            Err(Error::DeviceLost(_)) => {
                // Carry on from the last weights the GPU handed back (optimizer moments
                // restart), rather than lose the run.
                report.fell_back_to_cpu = true;
                engine = AnyEngine::Cpu(CpuEngine::new(data, current.0.clone(), current.1.clone()));
                engine.epoch(&batches, prepared_val.is_some()).await?
            }
            other => other?,
        };
        if !outcome.train_loss.is_finite() {
            return Err(Error::InvalidData(format!(
                "loss became non-finite at epoch {epoch}; lower the learning rate"
            )));
        }
        report.steps += batches.len() as u64;
        current = (outcome.head, outcome.exposure);
        let val_loss = outcome.val_loss;
        let epoch_report = EpochReport {
            epoch,
            epochs: config.epochs,
            train_loss: outcome.train_loss,
            val_loss,
            effective_sample_size: ess,
        };
        report.epochs.push(epoch_report.clone());
        let flow = progress(&epoch_report);
        between_epochs().await;

        match val_loss {
            Some(vl) => {
                if best.as_ref().is_none_or(|(b, _, _)| vl < *b) {
                    best = Some((vl, current.0.clone(), current.1.clone()));
                    report.best_epoch = epoch;
                    since_best = 0;
                } else {
                    since_best += 1;
                }
            }
            None => report.best_epoch = epoch,
        }
        if flow.is_break() {
            report.cancelled = true;
            break;
        }
        if val_loss.is_some()
            && config.patience > 0
            && since_best >= config.patience
            && epoch < config.epochs
        {
            report.stopped_early = true;
            break;
        }
    }
    let (head, exposure_head) = match best {
        Some((_, h, e)) => (h, e),
        None => current,
    };
    Ok(Trained {
        head,
        exposure_head,
        report,
    })
}

/// Everything an engine needs besides the weights, shared by the CPU and GPU engines.
#[derive(Clone, Copy)]
pub(crate) struct RunData<'a> {
    pub prepared: &'a Prepared,
    pub prepared_val: Option<&'a Prepared>,
    pub train: &'a Examples,
    pub val: Option<&'a Examples>,
    pub optimizer: AdamWConfig,
}

/// What one epoch of an engine produced.
pub(crate) struct EpochOutcome {
    /// Mean training loss, weighted by batch rows (pairs for `pairwise`).
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub head: Head,
    pub exposure: Option<Head>,
}

/// Where a training run's steps execute: one optimizer step per batch, then the validation
/// loss if asked. An enum rather than a trait object, so that `epoch` can be async.
enum AnyEngine<'a> {
    Cpu(CpuEngine<'a>),
    Gpu(crate::backend::gpu::GpuEngine<'a>),
}

impl AnyEngine<'_> {
    async fn epoch(&mut self, batches: &[Batch], validate: bool) -> Result<EpochOutcome> {
        match self {
            AnyEngine::Cpu(e) => e.epoch(batches, validate),
            AnyEngine::Gpu(e) => e.epoch(batches, validate).await,
        }
    }
}

/// The reference engine: ndarray on the CPU.
struct CpuEngine<'a> {
    data: RunData<'a>,
    head: Head,
    exposure: Option<Head>,
    opt: AdamW,
    opt_exposure: Option<AdamW>,
}

impl<'a> CpuEngine<'a> {
    fn new(data: RunData<'a>, head: Head, exposure: Option<Head>) -> Self {
        let opt = AdamW::new(data.optimizer, &head);
        let opt_exposure = exposure.as_ref().map(|e| AdamW::new(data.optimizer, e));
        CpuEngine {
            data,
            head,
            exposure,
            opt,
            opt_exposure,
        }
    }
}

impl CpuEngine<'_> {
    fn epoch(&mut self, batches: &[Batch], validate: bool) -> Result<EpochOutcome> {
        let (train, prepared) = (self.data.train, self.data.prepared);
        let mut loss_sum = 0.0;
        let mut weight_sum = 0.0;
        for (rows, pairs) in batches {
            let x = train.emb.select(Axis(0), rows);
            let (out, cache) = cpu::forward_train(&self.head, x.view());
            let aux_in = self
                .exposure
                .as_ref()
                .map(|_| train.exposure.select(Axis(0), rows));
            let aux_fwd = self
                .exposure
                .as_ref()
                .zip(aux_in.as_ref())
                .map(|(e, a)| cpu::forward_train(e, a.view()));
            let LossGrad { loss, d_out, d_aux } = prepared.batch_loss(
                rows,
                pairs,
                out.view(),
                aux_fwd.as_ref().map(|(o, _)| o.view()),
            )?;
            let grads = cpu::backward(&self.head, &cache, d_out.view());
            self.opt.step(&mut self.head, &grads);
            if let (Some(e), Some(o), Some((_, c)), Some(d)) = (
                self.exposure.as_mut(),
                self.opt_exposure.as_mut(),
                aux_fwd.as_ref(),
                d_aux,
            ) {
                let g = cpu::backward(e, c, d.view());
                o.step(e, &g);
            }
            let weight = if prepared.kind().is_pairwise() {
                pairs.len()
            } else {
                rows.len()
            } as f64;
            loss_sum += loss * weight;
            weight_sum += weight;
        }
        let val_loss = match (validate, self.data.prepared_val, self.data.val) {
            (true, Some(pv), Some(v)) => {
                Some(full_loss(&self.head, self.exposure.as_ref(), pv, v)?)
            }
            _ => None,
        };
        Ok(EpochOutcome {
            train_loss: loss_sum / weight_sum,
            val_loss,
            head: self.head.clone(),
            exposure: self.exposure.clone(),
        })
    }
}

/// A minibatch: example rows, and pairs `(winner, loser, weight)` indexed into those rows.
pub(crate) type Batch = (Vec<usize>, Vec<(usize, usize, f32)>);

/// Minibatches of one epoch.
fn make_batches(prepared: &Prepared, n: usize, batch_size: usize, rng: &mut Rng) -> Vec<Batch> {
    if prepared.kind().is_pairwise() {
        let mut order: Vec<usize> = (0..prepared.pairs.len()).collect();
        rng.shuffle(&mut order);
        order
            .chunks(batch_size)
            .map(|chunk| {
                let mut rows = Vec::new();
                let mut local = std::collections::HashMap::new();
                let mut index = |r: usize, rows: &mut Vec<usize>| {
                    *local.entry(r).or_insert_with(|| {
                        rows.push(r);
                        rows.len() - 1
                    })
                };
                let pairs = chunk
                    .iter()
                    .map(|&p| {
                        let (w, l, wt) = prepared.pairs[p];
                        (index(w, &mut rows), index(l, &mut rows), wt)
                    })
                    .collect();
                (rows, pairs)
            })
            .collect()
    } else {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        order
            .chunks(batch_size)
            .map(|c| (c.to_vec(), Vec::new()))
            .collect()
    }
}

/// The objective's loss over a whole set (no gradients used).
pub fn full_loss(
    head: &Head,
    exposure: Option<&Head>,
    prepared: &Prepared,
    ex: &Examples,
) -> Result<f64> {
    let rows: Vec<usize> = (0..ex.len()).collect();
    let out = cpu::forward(head, ex.emb.view())?;
    let aux = exposure
        .map(|e| cpu::forward(e, ex.exposure.view()))
        .transpose()?;
    Ok(prepared
        .batch_loss(
            &rows,
            &prepared.pairs,
            out.view(),
            aux.as_ref().map(|a| a.view()),
        )?
        .loss)
}

/// `σ(z)` of the head's first output for every row.
fn probabilities(head: &Head, emb: &Array2<f32>) -> Vec<f32> {
    cpu::forward_unchecked(head, emb.view())
        .column(0)
        .iter()
        .map(|&z| sigmoid(z as f64) as f32)
        .collect()
}

/// Out-of-fold predictions `σ(z)` of a one-output auxiliary head (the noisy-label head of
/// the flip-rate anchors, the `dr` imputation head), by 2-fold cross-fitting: each half is
/// scored by a head fitted on the other half, early-stopped on the half it scores. In-sample
/// predictions would let a flexible head memorise the labels it is meant to smooth (anchors
/// at exactly 0 and 1, so flip rates estimated as 0). Also returns the mean of both heads'
/// predictions on each of `others`.
fn cross_fit(
    like: &Head,
    base: &ObjectiveConfig,
    kind: ObjectiveKind,
    flip: FlipRates,
    train_set: &Examples,
    others: &[&Examples],
    config: &TrainConfig,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let n = train_set.len();
    if n < 2 {
        return Err(Error::InvalidData(
            "cross-fitting an auxiliary head needs at least 2 examples".into(),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(config.seed ^ 0xC5).shuffle(&mut order);
    let folds = [&order[..n / 2], &order[n / 2..]];
    let aux_cfg = HeadConfig {
        outputs: 1,
        ..like.config.clone()
    };
    let objective = ObjectiveConfig {
        kind,
        flip: Some(flip),
        ..base.clone()
    };
    let mut out_of_fold = vec![0.0f32; n];
    let mut on_others: Vec<Vec<f32>> = others.iter().map(|o| vec![0.0; o.len()]).collect();
    for (k, fold) in folds.iter().enumerate() {
        let held_out = folds[1 - k];
        let (fit_set, check_set) = (train_set.select(fold), train_set.select(held_out));
        let init = Head::init(&aux_cfg, config.seed ^ (0xA0 + k as u64))?;
        let cfg = TrainConfig {
            seed: config.seed ^ (0xA1 + k as u64),
            ..config.clone()
        };
        let head = train(
            &init,
            &objective,
            &fit_set,
            Some(&check_set),
            &cfg,
            &mut |_| ControlFlow::Continue(()),
        )?
        .head;
        for (p, &row) in probabilities(&head, &check_set.emb)
            .into_iter()
            .zip(held_out)
        {
            out_of_fold[row] = p;
        }
        for (acc, other) in on_others.iter_mut().zip(others) {
            for (a, p) in acc.iter_mut().zip(probabilities(&head, &other.emb)) {
                *a += 0.5 * p;
            }
        }
    }
    Ok((out_of_fold, on_others))
}

/// Flip rates from the anchor quantiles of a noisy-label head fitted to the explicit labels
/// (inverse-propensity weighted, so that the anchors see the whole exposure distribution),
/// with out-of-fold predictions.
fn estimate_flips(
    head: &Head,
    objective: &ObjectiveConfig,
    train_set: &Examples,
    config: &TrainConfig,
) -> Result<FlipRates> {
    let labelled = train_set.feedback.iter().filter(|&&m| m > 0.5).count();
    if labelled == 0 {
        return Err(Error::InvalidData(
            "flip-rate estimation needs explicit labels (no exposure has feedback)".into(),
        ));
    }
    let (probs, _) = cross_fit(
        head,
        objective,
        ObjectiveKind::NoiseIps,
        FlipRates::NONE,
        train_set,
        &[],
        config,
    )?;
    let (lo, hi) = objective.anchor_quantiles;
    estimate_flip_rates(&probs, lo, hi)
}

/// Scores (first output logit) for `x` with a trained head: the public scoring entry point.
pub fn score(head: &Head, x: ArrayView2<f32>) -> Result<Vec<f32>> {
    Ok(cpu::forward(head, x)?.column(0).to_vec())
}

/// Like [`score`], on the given device, blocking until done. The browser cannot block: there
/// a GPU device is refused with `invalid_config`, and [`score_async`] is the entry point.
pub fn score_on(device: &Device, head: &Head, x: ArrayView2<f32>) -> Result<Vec<f32>> {
    match device {
        Device::Cpu => score(head, x),
        #[cfg(not(target_arch = "wasm32"))]
        Device::Gpu(ctx) => crate::backend::gpu::score(ctx, head, x),
        #[cfg(target_arch = "wasm32")]
        Device::Gpu(_) => Err(blocking_on_the_web()),
    }
}

#[cfg(target_arch = "wasm32")]
fn blocking_on_the_web() -> Error {
    Error::InvalidConfig("the browser cannot block on the GPU; use the async entry points".into())
}

/// Like [`score_on`], without blocking (the browser's form).
pub async fn score_async(device: &Device, head: &Head, x: ArrayView2<'_, f32>) -> Result<Vec<f32>> {
    match device {
        Device::Cpu => score(head, x),
        Device::Gpu(ctx) => crate::backend::gpu::score_async(ctx, head, x).await,
    }
}
