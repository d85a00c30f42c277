//! The WGSL backend: the head's forward pass, every objective's loss and gradient, the
//! backward pass and AdamW as compute shaders (`shaders/`), run through wgpu.
//!
//! Weights, optimizer moments and the training set stay resident on the GPU during a training
//! call; one epoch is one submission holding every step, and one readback of the epoch's
//! summary (training and validation loss) together with the weights, which the trainer keeps
//! so that a lost device never loses the run. Scoring is one upload, one submission, one
//! readback.

mod context;
mod dispatch;
mod engine;
mod kernels;
mod plan;
mod uniforms;

pub use context::{Counters, GpuContext};
pub(crate) use engine::GpuEngine;

use ndarray::ArrayView2;

use crate::backend::cpu;
use crate::error::Result;
use crate::head::Head;

/// Scores `x` (first output logit per row) on the GPU, without blocking (callers go through
/// [`crate::backend::Device::score_async`], which falls back to the CPU on a lost device).
pub async fn score_async(
    ctx: &GpuContext,
    head: &Head,
    x: ArrayView2<'_, f32>,
) -> Result<Vec<f32>> {
    cpu::validate_input(head, x)?;
    if x.nrows() == 0 {
        return Ok(Vec::new());
    }
    let outputs = plan::forward(ctx, head, x).await?;
    let k = head.config.outputs;
    Ok(outputs.chunks(k).map(|row| row[0]).collect())
}
