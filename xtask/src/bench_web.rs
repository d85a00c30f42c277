//! `cargo xtask bench-web`: tacit-rm against TensorFlow.js and jax-js in one headless Chromium run.
//!
//! Builds the npm package (`web::build_pkg`), installs the bench's pinned JS packages
//! (`npm ci` in `bench/`: TF.js with its webgpu and wasm backends, jax-js, playwright-core), and
//! runs `bench/run.mjs`, which checks that the libraries do the same work and writes
//! `bench/results.{json,md}`. Extra arguments go to the driver (`--quick`, `--repeats N`,
//! `--train-repeats N`, `--cold-repeats N`, `--latency-calls N`, `--only tacit-rm/cpu,tfjs/wasm`).
//!
//! Not part of `cargo xtask test`: a full run takes about 15 minutes on this machine type.

use std::process::Command;

use crate::{root, run, web, Result};

pub fn bench_web(extra: &[String]) -> Result {
    bench_web_with(extra, &[])
}

/// `bench_web` with extra environment for the driver (`cargo xtask bench-real-gpu` asks it
/// for the hardware adapter).
pub fn bench_web_with(extra: &[String], env: &[(&str, &str)]) -> Result {
    crate::setup()?;
    web::build_pkg()?;
    let bench = root().join("bench");
    run(Command::new("npm")
        // No install scripts: the packages need none, and nothing may download at install.
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&bench))?;
    let mut node = Command::new("node");
    node.arg("run.mjs")
        .args(extra)
        .current_dir(&bench)
        .env("CHROMIUM", web::CHROMIUM)
        // Chromium must find its own Vulkan/SwiftShader setup (DESIGN §9).
        .env_remove("VK_DRIVER_FILES")
        .env_remove("VK_ICD_FILENAMES");
    for (k, v) in env {
        node.env(k, v);
    }
    run(&mut node)?;
    Ok(())
}
