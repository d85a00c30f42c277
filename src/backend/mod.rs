//! Where the head's arithmetic runs. `cpu` (ndarray) is the reference every other backend
//! is checked against; `gpu` runs the same kernels as WGSL compute shaders through wgpu.
//! `engine` is the contract between the trainer and a backend; scoring is the device's.

pub mod cpu;
mod engine;
pub mod gpu;
pub mod placement;

pub(crate) use engine::{AnyEngine, Batch, RunData};

use ndarray::ArrayView2;

use crate::error::{Error, Result};
use crate::head::Head;

/// A device to score and train on.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    Gpu(std::sync::Arc<gpu::GpuContext>),
}

impl Device {
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu(_) => "gpu",
        }
    }

    /// Whether this is a GPU whose device has been lost: every later call on it runs on the
    /// CPU, and a host should switch its model to [`Device::Cpu`].
    pub fn is_lost(&self) -> bool {
        match self {
            Device::Cpu => false,
            Device::Gpu(ctx) => ctx.is_lost(),
        }
    }

    /// Scores (first output logit) for `x` with `head`, blocking until done. The browser
    /// cannot block: there a GPU device is refused with `invalid_config`, and
    /// [`Device::score_async`] is the entry point.
    pub fn score(&self, head: &Head, x: ArrayView2<f32>) -> Result<Vec<f32>> {
        match self {
            Device::Cpu => cpu::score(head, x),
            #[cfg(not(target_arch = "wasm32"))]
            Device::Gpu(_) => pollster::block_on(self.score_async(head, x)),
            #[cfg(target_arch = "wasm32")]
            Device::Gpu(_) => Err(blocking_on_the_web()),
        }
    }

    /// Like [`Device::score`], without blocking (the browser's form). A GPU lost before or
    /// during the call scores on the CPU instead: the weights are not lost with the device.
    /// [`Device::is_lost`] tells the caller to move to the CPU for good.
    pub async fn score_async(&self, head: &Head, x: ArrayView2<'_, f32>) -> Result<Vec<f32>> {
        match self {
            Device::Cpu => cpu::score(head, x),
            Device::Gpu(ctx) => match gpu::score_async(ctx, head, x).await {
                Err(Error::DeviceLost(_)) => cpu::score(head, x),
                other => other,
            },
        }
    }
}

/// The error of a blocking GPU call in the browser, whose main thread cannot block.
#[cfg(target_arch = "wasm32")]
pub(crate) fn blocking_on_the_web() -> Error {
    Error::InvalidConfig("the browser cannot block on the GPU; use the async entry points".into())
}
