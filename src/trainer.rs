//! The trainer: shuffled minibatches, AdamW, early stopping on a validation split, progress
//! callbacks; deterministic under a seed. This file is the epoch loop; the batching, the
//! auxiliary fits some objectives need before the main run (flip-rate anchors, the `dr`
//! imputation head, on the same device) and the request and report types have files of
//! their own. The optimizer steps run on a backend engine (`crate::backend`).

mod auxiliary;
mod batches;
mod report;
mod request;

pub use report::{EpochReport, TrainReport, Trained, TrainedPart};
pub use request::{TrainConfig, TrainRequest};

use std::ops::ControlFlow;

use crate::backend::{AnyEngine, Device, RunData};
use crate::error::{check, Error, Result};
use crate::feedback::flip::FlipRates;
use crate::feedback::Examples;
use crate::head::{Head, HeadConfig};
use crate::objective::{ObjectiveKind, Prepared};
use crate::rng::Rng;

use auxiliary::{cross_fit, estimate_flips};
use batches::make_batches;

/// Progress callback: return `ControlFlow::Break(())` to stop after this epoch.
pub type Progress<'a> = &'a mut dyn FnMut(&EpochReport) -> ControlFlow<()>;

/// Runs `request` on the CPU reference backend.
pub fn train(request: &TrainRequest<'_>, progress: Progress<'_>) -> Result<Trained> {
    train_on(&Device::Cpu, request, progress)
}

/// Like [`train`], on the given device, blocking until the run ends (the browser cannot
/// block: there a GPU device is refused with `invalid_config`, and [`train_async`] is the
/// entry point). On a lost GPU device the run carries on on the CPU from the last weights.
pub fn train_on(
    device: &Device,
    request: &TrainRequest<'_>,
    progress: Progress<'_>,
) -> Result<Trained> {
    #[cfg(target_arch = "wasm32")]
    if matches!(device, Device::Gpu(_)) {
        return Err(crate::backend::blocking_on_the_web());
    }
    let run = train_async(device, request, progress, || std::future::ready(()));
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
pub async fn train_async<Y: std::future::Future<Output = ()>>(
    device: &Device,
    request: &TrainRequest<'_>,
    progress: Progress<'_>,
    mut between_epochs: impl FnMut() -> Y,
) -> Result<Trained> {
    let TrainRequest {
        head,
        objective,
        train,
        val,
        config,
    } = *request;
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
            None => estimate_flips(device, request).await?,
        })
    } else {
        None
    };
    let (imputed_train, imputed_val) = if kind == ObjectiveKind::Dr {
        let others: Vec<&Examples> = val.into_iter().collect();
        let flip = flip.unwrap_or(FlipRates::NONE);
        let (on_train, mut on_val) =
            cross_fit(device, request, ObjectiveKind::NoiseIps, flip, &others).await?;
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
        batch_size: config.batch_size,
    };
    let (mut engine, lost_before) = AnyEngine::new(device, data, head, exposure.as_ref())?;
    let mut rng = Rng::new(config.seed);
    let ess = prepared.effective_sample_size();

    let mut report = TrainReport {
        epochs: Vec::new(),
        best_epoch: 0,
        stopped_early: false,
        cancelled: false,
        flip,
        steps: 0,
        fell_back_to_cpu: lost_before,
    };
    let mut current = (head.clone(), exposure);
    let mut best: Option<(f64, Head, Option<Head>)> = None;
    let mut since_best = 0;
    for epoch in 1..=config.epochs {
        let batches = make_batches(&prepared, train.len(), config.batch_size, &mut rng);
        // A lost GPU hands over to the CPU from the last weights it returned, rather than
        // lose the run.
        let (outcome, fell_back) = engine
            .epoch(
                data,
                &batches,
                prepared_val.is_some(),
                (&current.0, current.1.as_ref()),
            )
            .await?;
        report.fell_back_to_cpu |= fell_back;
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
            part: TrainedPart::Shared,
            fraction: epoch as f64 / config.epochs.max(1) as f64,
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
