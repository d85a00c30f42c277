//! The capability probe: WebGPU with an adapter → `webgpu`, otherwise `cpu`, unless the app
//! forces one. The GPU context is made once per page or worker and shared by every model in
//! it (a new one only after the device is lost).

use std::cell::RefCell;
use std::sync::Arc;

use super::options::BackendChoice;
use crate::backend::gpu::GpuContext;
use crate::backend::Device;
use crate::error::{Error, Result};

thread_local! {
    static CONTEXT: RefCell<Option<Arc<GpuContext>>> = const { RefCell::new(None) };
}

async fn context() -> Result<Arc<GpuContext>> {
    if let Some(ctx) = CONTEXT.with(|c| c.borrow().clone()) {
        if !ctx.is_lost() {
            return Ok(ctx);
        }
    }
    // The wasm32 build is single-threaded; wgpu's WebGPU handles are not Send there, and an
    // `Arc` is what the crate's device type holds on every target.
    #[allow(clippy::arc_with_non_send_sync)]
    let ctx = Arc::new(GpuContext::new().await?);
    CONTEXT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
    Ok(ctx)
}

/// The device for `choice`. `auto` never fails: without WebGPU it is the CPU.
pub async fn choose(choice: BackendChoice) -> Result<Device> {
    match choice {
        BackendChoice::Cpu => Ok(Device::Cpu),
        BackendChoice::Webgpu => context()
            .await
            .map(Device::Gpu)
            .map_err(|e| Error::NoWebGpu(e.to_string())),
        BackendChoice::Auto => Ok(context().await.map(Device::Gpu).unwrap_or(Device::Cpu)),
    }
}

/// The name apps see.
pub fn name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Gpu(_) => "webgpu",
    }
}
