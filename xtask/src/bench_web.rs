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
    crate::setup()?;
    web::build_pkg()?;
    let bench = root().join("bench");
    run(Command::new("npm")
        // No install scripts: the packages need none, and nothing may download at install.
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&bench))?;
    run(Command::new("node")
        .arg("run.mjs")
        .args(extra)
        .current_dir(&bench)
        .env("CHROMIUM", web::CHROMIUM)
        // Chromium must find its own Vulkan/SwiftShader setup (DESIGN §9).
        .env_remove("VK_DRIVER_FILES")
        .env_remove("VK_ICD_FILENAMES"))?;
    Ok(())
}
