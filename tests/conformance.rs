//! The conformance suite on the native hosts: every case of `conformance/cases.rs` runs on
//! the CPU reference (`cpu::<case>`) and on the WGSL backend through wgpu (`gpu::<case>`, a
//! fresh GPU context per test so that submission counters are the test's own). A machine
//! without a GPU adapter fails the `gpu::` tests: software Vulkan (Mesa lavapipe) is enough.
//! The browser runs the same cases on WebGPU (`tests/web.rs`).
#![cfg(not(target_arch = "wasm32"))]

mod common;
#[macro_use]
#[path = "conformance/cases.rs"]
mod cases;

use std::sync::Arc;

use tacit_rm::backend::gpu::GpuContext;
use tacit_rm::backend::Device;

fn no_adapter(e: &tacit_rm::Error) -> String {
    format!("no GPU adapter: the gpu:: conformance tests need one (Mesa lavapipe will do): {e}")
}

/// A GPU device of its own for one test.
fn gpu() -> Device {
    match pollster::block_on(GpuContext::new()) {
        Ok(ctx) => Device::Gpu(Arc::new(ctx)),
        Err(e) => panic!("{}", no_adapter(&e)),
    }
}

macro_rules! native_hosts {
    ($($case:ident),* $(,)?) => {
        mod cpu {
            $(#[test]
            fn $case() {
                pollster::block_on(crate::cases::$case(&tacit_rm::backend::Device::Cpu));
            })*
        }
        mod gpu {
            $(#[test]
            fn $case() {
                pollster::block_on(crate::cases::$case(&crate::gpu()));
            })*
        }
    };
}

conformance_cases!(native_hosts);

/// Native only (it reads the dev fixture from disk, and an eval is minutes in a browser):
/// `tacit eval --backend gpu` reproduces the CPU table: every method's per-seed AUROC on the
/// real fixture agrees far inside the seed-to-seed spread.
#[test]
fn eval_on_the_gpu_reproduces_the_cpu_table() {
    let ctx = GpuContext::shared().unwrap_or_else(|e| panic!("{}", no_adapter(&e)));
    let ds = tacit_rm::data::Dataset::load(&common::fixture()).unwrap();
    let cfg = tacit_rm::eval::EvalConfig {
        seeds: 2,
        methods: tacit_rm::eval::Method::parse_list(
            "naive,ips,noise-ips,implicit,pairwise,beta,oracle",
        )
        .unwrap(),
        ..Default::default()
    };
    let cpu = tacit_rm::eval::run_on(&Device::Cpu, &ds, &cfg, &mut |_, _, _| {}).unwrap();
    let gpu = tacit_rm::eval::run_on(&Device::Gpu(ctx), &ds, &cfg, &mut |_, _, _| {}).unwrap();
    for ((name, c), (_, g)) in cpu.rows.iter().zip(&gpu.rows) {
        for (sc, sg) in c.per_seed.iter().zip(&g.per_seed) {
            assert!(
                (sc.auroc - sg.auroc).abs() < 0.005,
                "{name}: cpu {} vs gpu {}",
                sc.auroc,
                sg.auroc
            );
        }
        // The seed spread the table reports is an order of magnitude larger than that.
        assert!((c.auroc.mean - g.auroc.mean).abs() < 0.005, "{name}");
    }
}
