//! Where the head's arithmetic runs. `cpu` (ndarray) is the reference every other backend
//! is checked against; `gpu` runs the same kernels as WGSL compute shaders through wgpu.

pub mod cpu;
pub mod gpu;

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
}
