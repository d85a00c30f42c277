//! The GPU context: instance, adapter, device and queue built once, a pipeline cache keyed by
//! (kernel, entry point, override constants), counters of submissions and readbacks, and device-loss detection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

use super::kernels::PipelineKey;

/// A compiled kernel: its bind group layout and pipeline.
pub(crate) struct Pipeline {
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
}

/// Queue submissions and buffer readbacks since the context was made (what the benchmarks
/// and the "one readback per call" test count).
#[derive(Debug, Default)]
pub struct Counters {
    pub submissions: AtomicU64,
    pub readbacks: AtomicU64,
}

pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub adapter: wgpu::AdapterInfo,
    pub counters: Counters,
    lost: Arc<AtomicBool>,
    /// First uncaptured validation or device error, surfaced as a typed error by the next call.
    error: Arc<Mutex<Option<String>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuContext({} on {:?})",
            self.adapter.name, self.adapter.backend
        )
    }
}

impl GpuContext {
    /// Whether the adapter is a software rasteriser (the browser's fallback adapter, which
    /// wgpu reports as a CPU device, or SwiftShader, llvmpipe and lavapipe by name): slower
    /// than the CPU path for latency-bound work (DESIGN §11).
    pub fn is_software(&self) -> bool {
        let name = self.adapter.name.to_ascii_lowercase();
        self.adapter.device_type == wgpu::DeviceType::Cpu
            || ["swiftshader", "llvmpipe", "lavapipe"]
                .iter()
                .any(|s| name.contains(s))
    }

    /// Requests an adapter and a device (honours `WGPU_BACKEND=vulkan|gl`).
    pub async fn new() -> Result<Self> {
        // In a page without WebGPU (or in node) touching the instance would trap; ask first.
        #[cfg(target_arch = "wasm32")]
        if !wgpu::util::is_browser_webgpu_supported().await {
            return Err(Error::NoGpu("this browser does not expose WebGPU".into()));
        }
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoGpu(format!("no GPU adapter: {e}")))?;
        let limits = wgpu::Limits::downlevel_defaults().using_resolution(adapter.limits());
        let limits = wgpu::Limits {
            // WebGPU guarantees 8 storage buffers per stage; the loss kernels bind 7.
            max_storage_buffers_per_shader_stage: 8,
            max_storage_buffer_binding_size: adapter.limits().max_storage_buffer_binding_size,
            max_buffer_size: adapter.limits().max_buffer_size,
            ..limits
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tacit-rm"),
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoGpu(format!("the adapter refused a device: {e}")))?;
        let lost = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        {
            let lost = lost.clone();
            let error = error.clone();
            device.set_device_lost_callback(move |reason, message| {
                lost.store(true, Ordering::SeqCst);
                error
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert(format!("{reason:?}: {message}"));
            });
        }
        {
            let error = error.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                error
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert(e.to_string());
            }));
        }
        Ok(GpuContext {
            device,
            queue,
            adapter: adapter.get_info(),
            counters: Counters::default(),
            lost,
            error,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The process-wide context, built on first use (native only: blocks on the async setup).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn shared() -> Result<Arc<GpuContext>> {
        use std::sync::OnceLock;
        static SHARED: OnceLock<std::result::Result<Arc<GpuContext>, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                pollster::block_on(GpuContext::new())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::NoGpu)
    }

    /// Whether the device has been lost (then every call fails with `device_lost`).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Marks the device lost, as a driver reset would (for tests of the fallback path).
    pub fn simulate_device_loss(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.error
            .lock()
            .expect("not poisoned")
            .get_or_insert("device loss simulated".into());
    }

    /// Fails with `device_lost` if the device is gone or an error was reported.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(e) = self.error.lock().expect("not poisoned").clone() {
            return Err(Error::DeviceLost(e));
        }
        if self.is_lost() {
            return Err(Error::DeviceLost("the GPU device was lost".into()));
        }
        Ok(())
    }

    /// The cached pipeline of `key`, compiled on first use. Called when a plan is built (one
    /// lock per dispatch built), never while recording.
    pub(crate) fn pipeline(&self, key: PipelineKey) -> Arc<Pipeline> {
        let mut cache = self.pipelines.lock().expect("not poisoned");
        cache
            .entry(key)
            .or_insert_with(|| Arc::new(self.compile(key)))
            .clone()
    }

    fn compile(&self, key: PipelineKey) -> Pipeline {
        let kernel = key.kernel;
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name()),
                source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
            });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .bindings()
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: b.ty(),
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.name()),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.name()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let constants = key.constants();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(key.entry_point),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    ..Default::default()
                },
                cache: None,
            });
        Pipeline { layout, pipeline }
    }

    pub(crate) fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.counters.submissions.fetch_add(1, Ordering::SeqCst);
        self.queue.submit(Some(encoder.finish()));
    }

    /// Maps a `MAP_READ` staging buffer and copies it out: `map_async` + a oneshot channel.
    /// Natively the callback fires inside `device.poll`; on the web the await yields to the
    /// browser's event loop instead.
    pub(crate) async fn read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        self.counters.readbacks.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let slice = staging.slice(..);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(format!("waiting for the GPU: {e}")))?;
        rx.await
            .map_err(|_| Error::DeviceLost("the readback was dropped".into()))?
            .map_err(|e| Error::DeviceLost(format!("mapping the readback buffer: {e}")))?;
        self.check()?;
        let bytes = slice
            .get_mapped_range()
            .map_err(|e| Error::DeviceLost(format!("reading the mapped range: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }
}
