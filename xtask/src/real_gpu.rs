//! `cargo xtask bench-real-gpu [--allow-software] [bench-web arguments]`: the real-GPU figures of
//! issue 13 as one prepared command, for a machine with a hardware GPU (Vulkan on an NVIDIA card,
//! say). It runs
//!
//! 1. `tacit bench` natively on the machine's own Vulkan driver (no lavapipe override), into
//!    `results/real-gpu/bench.{json,md}`, and
//! 2. the browser bench (`cargo xtask bench-web`) with Chromium on the hardware adapter
//!    (`TACIT_BENCH_GPU=hardware`, see `tests/js/lib/flags.mjs`), into
//!    `results/real-gpu/bench-web.{json,md}`.
//!
//! Each half refuses a software adapter (llvmpipe, lavapipe, SwiftShader, a fallback adapter):
//! figures taken on one are not real-GPU figures, and nothing is written to `results/`.
//! `--allow-software` lets a machine without a GPU rehearse the command end to end, into
//! `target/real-gpu-rehearsal/` instead. On this project's machines the whole run takes a few
//! minutes on a real GPU (the browser half dominates; `--quick` shortens it).

use std::process::Command;

use crate::{cargo, root, run, Result};

const OUT: &str = "results/real-gpu";
const REHEARSAL: &str = "target/real-gpu-rehearsal";

pub fn bench_real_gpu(args: &[String]) -> Result {
    let allow_software = args.iter().any(|a| a == "--allow-software");
    let mut extra: Vec<String> = args
        .iter()
        .filter(|a| *a != "--allow-software")
        .cloned()
        .collect();
    if extra.iter().any(|a| a == "--out") {
        return Err(format!(
            "bench-real-gpu writes {OUT}/bench-web.{{json,md}}; --out is its own"
        ));
    }
    crate::setup()?;
    let dir = if allow_software { REHEARSAL } else { OUT };
    // The native run is written aside first: it reaches `dir` only once its adapter passed.
    let scratch = root().join("target/real-gpu-native");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;

    run(cargo().args(["build", "--release", "--bin", "tacit"]))?;
    let json = scratch.join("bench.json");
    run(Command::new(root().join("target/release/tacit"))
        .arg("bench")
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(scratch.join("bench.md"))
        // The machine's own Vulkan driver, not the lavapipe the test suite pins.
        .env_remove("VK_DRIVER_FILES")
        .env_remove("VK_ICD_FILENAMES"))?;
    let written = std::fs::read_to_string(&json).map_err(|e| format!("{}: {e}", json.display()))?;
    let adapter = adapter_of(&written).unwrap_or_else(|| "none".into());
    if is_software(&adapter) && !allow_software {
        return Err(format!(
            "tacit bench ran on '{adapter}', not a hardware GPU: no real-GPU figures from this \
             machine (nothing written to {OUT}; --allow-software rehearses the command into \
             {REHEARSAL})"
        ));
    }
    eprintln!("bench-real-gpu: native adapter {adapter}");
    let out = root().join(dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for f in ["bench.json", "bench.md"] {
        let to = out.join(f);
        std::fs::copy(scratch.join(f), &to).map_err(|e| format!("{}: {e}", to.display()))?;
    }

    extra.extend(["--out".to_string(), format!("../{dir}/bench-web")]);
    let mut env = vec![("TACIT_BENCH_GPU", "hardware")];
    if allow_software {
        env.push(("TACIT_BENCH_ALLOW_SOFTWARE", "1"));
    }
    crate::bench_web::bench_web_with(&extra, &env)?;
    eprintln!("bench-real-gpu: wrote {dir}/bench.{{json,md}} and {dir}/bench-web.{{json,md}}");
    Ok(())
}

/// The `"adapter"` string of `tacit bench --json`'s output (xtask has no JSON parser; the
/// field is one string written by serde_json, so a scan for it is exact enough).
fn adapter_of(json: &str) -> Option<String> {
    let rest = &json[json.find("\"adapter\"")? + "\"adapter\"".len()..];
    let rest = &rest[rest.find('"')? + 1..];
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

/// Whether `tacit bench`'s adapter description names no hardware GPU: none at all, a CPU
/// device type (wgpu's `DeviceType::Cpu`), or a known software renderer.
fn is_software(adapter: &str) -> bool {
    let a = adapter.to_lowercase();
    a == "none"
        || a.contains(", cpu)")
        || ["llvmpipe", "lavapipe", "swiftshader", "software"]
            .iter()
            .any(|s| a.contains(s))
}

#[cfg(test)]
mod tests {
    use super::{adapter_of, is_software};

    #[test]
    fn the_adapter_is_read_from_the_bench_json() {
        let json = "{\n  \"adapter\": \"NVIDIA H200 (Vulkan, DiscreteGpu)\",\n  \"figures\": []\n}";
        assert_eq!(
            adapter_of(json).as_deref(),
            Some("NVIDIA H200 (Vulkan, DiscreteGpu)")
        );
        assert_eq!(adapter_of("{\"figures\": []}"), None);
        assert_eq!(
            adapter_of("{\"adapter\": \"a \\\"quoted\\\" name\"}").as_deref(),
            Some("a \"quoted\" name")
        );
    }

    #[test]
    fn software_adapters_are_not_real_gpus() {
        assert!(is_software(
            "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)"
        ));
        assert!(is_software("none"));
        assert!(is_software("SwiftShader Device (Subzero) (Vulkan, Cpu)"));
        assert!(!is_software("NVIDIA H200 (Vulkan, DiscreteGpu)"));
        assert!(!is_software("AMD Radeon RX 7900 (Vulkan, DiscreteGpu)"));
    }
}
