//! The capability probe: WebGPU with an adapter → `webgpu`, otherwise `cpu`, unless the app
//! forces one. The GPU context is made once per page or worker and shared by every model in
//! it (a new one only after the device is lost). Under `auto`, each scoring call is placed
//! between the CPU path and the GPU by a crossover measured once per adapter and head shape
//! (DESIGN §11).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use wasm_bindgen::{JsCast, JsValue};

use super::options::BackendChoice;
use crate::backend::gpu::GpuContext;
use crate::backend::placement::{self, Placement, Served, ServedOn};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::head::{Head, HeadConfig};

/// The crossover `auto` uses if its calibration fails: a chat turn's candidates and a page
/// of results stay on the CPU path, a re-ranking of many answers goes to the GPU.
const UNCALIBRATED_CPU_ROWS: usize = 32;

thread_local! {
    static CONTEXT: RefCell<Option<Arc<GpuContext>>> = const { RefCell::new(None) };
    /// Measured crossovers by adapter and head shape (a new context, after a lost device,
    /// starts with none).
    static CROSSOVERS: RefCell<HashMap<String, usize>> = RefCell::new(HashMap::new());
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

/// How `auto` places scoring calls for a head of `config` on `device`: fixed when the app
/// forced a device or there is no GPU; otherwise everything on the CPU path for a software
/// adapter, else the measured crossover ([`placement::calibrate`], cached).
pub async fn placement(choice: BackendChoice, device: &Device, config: &HeadConfig) -> Placement {
    let ctx = match (choice, device) {
        (BackendChoice::Auto, Device::Gpu(ctx)) => ctx,
        _ => return Placement::Fixed,
    };
    if ctx.is_software() {
        return Placement::Auto {
            cpu_up_to_rows: 0,
            software_adapter: true,
        };
    }
    let key = format!("{}|{config:?}", ctx.adapter.name);
    let cached = CROSSOVERS.with(|c| c.borrow().get(&key).copied());
    let cpu_up_to_rows = match cached {
        Some(rows) => rows,
        None => {
            let measured = match Head::init(config, 0) {
                Ok(head) => placement::calibrate(device, &head, &now_ms)
                    .await
                    .map(|c| c.cpu_up_to_rows())
                    .ok(),
                Err(_) => None,
            };
            let rows = measured.unwrap_or(UNCALIBRATED_CPU_ROWS);
            if measured.is_some() {
                CROSSOVERS.with(|c| c.borrow_mut().insert(key, rows));
            }
            rows
        }
    };
    Placement::Auto {
        cpu_up_to_rows,
        software_adapter: false,
    }
}

/// `performance.now()` of the page or worker (`Date.now()` where there is none).
fn now_ms() -> f64 {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"performance".into())
        .ok()
        .and_then(|perf| {
            let now: js_sys::Function = js_sys::Reflect::get(&perf, &"now".into())
                .ok()?
                .dyn_into()
                .ok()?;
            now.call0(&perf).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

/// `stats().lastScore`: `{device: "cpu" | "webgpu", reason, rows}`, or null before the
/// first scoring call.
pub fn served_to_js(served: Option<Served>) -> JsValue {
    let Some(s) = served else {
        return JsValue::NULL;
    };
    let obj = js_sys::Object::new();
    let device = match s.device {
        ServedOn::Cpu => "cpu",
        ServedOn::Gpu => "webgpu",
    };
    let _ = js_sys::Reflect::set(&obj, &"device".into(), &device.into());
    let _ = js_sys::Reflect::set(&obj, &"reason".into(), &s.reason.name().into());
    let _ = js_sys::Reflect::set(&obj, &"rows".into(), &(s.rows as f64).into());
    obj.into()
}
