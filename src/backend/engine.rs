//! The contract between the trainer and a backend: what a training run hands an engine (the
//! run data and one epoch's batches) and what an epoch gives back. The trainer owns the loop,
//! the batching and early stopping; an engine owns the weights and optimizer state on its
//! device and runs the optimizer steps of one epoch.

use crate::error::{Error, Result};
use crate::feedback::Examples;
use crate::head::Head;
use crate::objective::Prepared;
use crate::optim::AdamWConfig;

use super::cpu::CpuEngine;
use super::gpu::GpuEngine;
use super::Device;

/// Everything an engine needs besides the weights, shared by the CPU and GPU engines.
#[derive(Clone, Copy)]
pub(crate) struct RunData<'a> {
    pub prepared: &'a Prepared,
    pub prepared_val: Option<&'a Prepared>,
    pub train: &'a Examples,
    pub val: Option<&'a Examples>,
    pub optimizer: AdamWConfig,
    /// The largest batch the run makes (examples, or pairs for `pairwise`): the GPU sizes
    /// its per-step buffers for it.
    pub batch_size: usize,
}

/// A minibatch: example rows, and pairs `(winner, loser, weight)` indexed into those rows.
pub(crate) type Batch = (Vec<usize>, Vec<(usize, usize, f32)>);

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
pub(crate) enum AnyEngine<'a> {
    Cpu(CpuEngine<'a>),
    Gpu(GpuEngine<'a>),
}

impl<'a> AnyEngine<'a> {
    /// The engine of `device`, starting from `head` (and the exposure head of `implicit`).
    /// A GPU already lost gives the CPU engine: the second value says so.
    pub fn new(
        device: &Device,
        data: RunData<'a>,
        head: &Head,
        exposure: Option<&Head>,
    ) -> Result<(Self, bool)> {
        let cpu = || AnyEngine::Cpu(CpuEngine::new(data, head.clone(), exposure.cloned()));
        match device {
            Device::Cpu => Ok((cpu(), false)),
            Device::Gpu(ctx) => match GpuEngine::new(ctx.clone(), data, head, exposure) {
                Ok(e) => Ok((AnyEngine::Gpu(e), false)),
                Err(Error::DeviceLost(_)) => Ok((cpu(), true)),
                Err(e) => Err(e),
            },
        }
    }

    /// Runs one epoch. A GPU lost during it is replaced by the CPU engine, which carries on
    /// from the last weights the GPU handed back (`last`; optimizer moments restart) and
    /// runs the epoch again; the second value says it happened.
    pub async fn epoch(
        &mut self,
        data: RunData<'a>,
        batches: &[Batch],
        validate: bool,
        last: (&Head, Option<&Head>),
    ) -> Result<(EpochOutcome, bool)> {
        match self {
            AnyEngine::Cpu(e) => return Ok((e.epoch(batches, validate)?, false)),
            AnyEngine::Gpu(e) => match e.epoch(batches, validate).await {
                Err(Error::DeviceLost(_)) => {}
                other => return Ok((other?, false)),
            },
        }
        let mut cpu = CpuEngine::new(data, last.0.clone(), last.1.cloned());
        let outcome = cpu.epoch(batches, validate)?;
        *self = AnyEngine::Cpu(cpu);
        Ok((outcome, true))
    }
}
