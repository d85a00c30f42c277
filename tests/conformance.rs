//! One conformance suite run against every backend (as burn does): the same test functions
//! check the CPU reference and the WGSL backend against independent references and against
//! each other. A machine without a GPU adapter skips the GPU half and says so, unless
//! `TACIT_REQUIRE_GPU=1` or `CI` is set (as `cargo xtask test` and CI do): then it fails.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tacit_rm::backend::gpu::GpuContext;
use tacit_rm::backend::Device;
use tacit_rm::feedback::flip::FlipRates;
use tacit_rm::feedback::{Examples, Pair};
use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind};
use tacit_rm::rng::Rng;
use tacit_rm::trainer::{score, score_on, train_on, TrainConfig};

fn gpu() -> Option<Arc<GpuContext>> {
    match GpuContext::shared() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            let required = std::env::var("TACIT_REQUIRE_GPU").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok();
            assert!(!required, "no GPU adapter, and this run requires one: {e}");
            eprintln!("SKIPPED the GPU half of this test: {e}");
            None
        }
    }
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpu().map(Device::Gpu));
    d
}

fn close(a: f32, b: f32, rel: f32) -> bool {
    (a - b).abs() <= rel * b.abs().max(1.0)
}

#[test]
fn forward_matches_the_cpu_reference() {
    let configs = [
        HeadConfig::new(384, &[]),
        HeadConfig::new(384, &[128]),
        HeadConfig { dim: 384, hidden: vec![32, 8], activation: Activation::Tanh, outputs: 2 },
    ];
    for device in devices() {
        for cfg in &configs {
            let head = Head::init(cfg, 3).unwrap();
            for n in [1, 64, 1000] {
                let x = common::random_matrix(n, 384, n as u64) * 0.1;
                let reference = score(&head, x.view()).unwrap();
                let got = score_on(&device, &head, x.view()).unwrap();
                assert_eq!(got.len(), n);
                for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
                    assert!(close(*g, *r, 1e-5), "{} {cfg:?} n={n} row {i}: {g} vs {r}", device.name());
                }
            }
        }
    }
}
