//! The project's task runner (`cargo xtask <command>`, as wgpu does).
//!
//! - `setup`: installs what a fresh machine needs, skipping what is already there.
//! - `test`:  setup, then formatting, clippy (native and wasm32) and the whole test suite.
//! - `demo [--port N]`: setup, the npm package, the page's MiniLM files (`demo_files.rs`) and the
//!   sync server, then the demo chat page
//!   on http://127.0.0.1:N/ (default 8080) with the sync server behind it (`www/serve.mjs`).
//! - `results`: regenerates the README's results tables (all three protocols) into `results/`.
//! - `bench`: `tacit bench` on every backend of this machine into `results/bench.{json,md}`.
//! - `pkg`:   builds the npm package into `pkg/` and its size report (see `web.rs`).
//! - `bench-flavours`: the baseline and SIMD wasm builds on the CPU path, in node.
//! - `bench-real-gpu [--allow-software]`: `tacit bench` and the browser bench on the machine's
//!   own GPU, into `results/real-gpu/` (`real_gpu.rs`); refuses a software adapter.
//! - `fuzz [--seconds N] [--target NAME]`: the coverage-guided fuzz targets of `fuzz/`
//!   (`fuzz.rs`), into `results/fuzz.{json,md}`.

mod bench_web;
mod demo_files;
mod fuzz;
mod postgres;
mod readme;
mod real_gpu;
mod release;
mod server_bench;
mod wasm_size;
mod web;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::time::Instant;

/// The dev fixture, shipped in the repository (licences in `tests/data/README.md`).
const FIXTURE: &str = "tests/data/hh_harmless_dev512.safetensors";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const PROTOCOLS: [&str; 3] = ["label", "covariate", "confounded"];

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("$ {}", describe(cmd));
    in_root(cmd);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

/// Commands run from the workspace root unless they chose a directory.
fn in_root(cmd: &mut Command) {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
}

fn output(cmd: &mut Command) -> Option<String> {
    in_root(cmd);
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Idempotent set-up of a fresh machine.
fn setup() -> Result {
    let have = |what: &str, list: &[&str]| {
        output(Command::new("rustup").args(list))
            .is_some_and(|s| s.lines().any(|l| l.starts_with(what)))
    };
    if output(Command::new("rustup").arg("--version")).is_none() {
        return Err(
            "rustup is required (the toolchain is managed by rustup on these machines)".into(),
        );
    }
    for component in ["rustfmt", "clippy"] {
        if !have(component, &["component", "list", "--installed"]) {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    if !have(WASM_TARGET, &["target", "list", "--installed"]) {
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    // Mesa's lavapipe: the software Vulkan adapter the GPU tests run on without a GPU.
    if !has_lavapipe() {
        install_apt(&["mesa-vulkan-drivers", "libvulkan1"])?;
    }
    postgres::ensure_installed()?;
    let fixture = root().join(FIXTURE);
    if !fixture.exists() {
        return Err(format!(
            "the dev fixture {} is missing from the checkout (it is tracked in git)",
            fixture.display()
        ));
    }
    web::setup()?;
    eprintln!("setup: toolchain components, the {WASM_TARGET} target, Mesa's Vulkan driver, the dev fixture, Chromium, the wasm-bindgen CLI and the JS test packages are in place");
    Ok(())
}

fn has_lavapipe() -> bool {
    std::fs::read_dir("/usr/share/vulkan/icd.d")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
        })
        .unwrap_or(false)
}

/// Installs Debian packages (as root, or through sudo when not).
fn install_apt(packages: &[&str]) -> Result {
    let root = output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0");
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd
    };
    run(&mut apt(&["update", "-qq"]))?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(packages);
    run(&mut apt(&args))
}

fn test() -> Result {
    let started = Instant::now();
    stage("setup", setup)?;
    stage("fmt", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        // The fuzz targets are a workspace of their own (see `fuzz.rs`).
        run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))
    })?;
    stage("clippy (native)", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // The library is what ships to the browser: it must build and lint clean for wasm32.
    stage("clippy (wasm32)", || {
        run(cargo().args([
            "clippy",
            "--lib",
            "--target",
            WASM_TARGET,
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    stage("native tests", native_tests)?;
    web::test()?;
    stage("README commands", readme::run_readme_commands)?;
    conformance_summary()?;
    eprintln!(
        "xtask test: everything passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs one stage of `test`, printing its wall time (CI allows 90 minutes in all).
pub fn stage(name: &str, f: impl FnOnce() -> Result) -> Result {
    let t = Instant::now();
    eprintln!("==> stage: {name}");
    let r = f();
    eprintln!(
        "==> stage: {name}: {} in {:.0} s",
        if r.is_ok() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    r
}

/// The native suite: the GPU half of the conformance suite must run here, not skip, and the
/// sync server's tests run against a real Postgres too.
fn native_tests() -> Result {
    let mut cmd = cargo();
    let pg = postgres::Cluster::start()?;
    cmd.args(["test", "--workspace"])
        .env("TACIT_REQUIRE_GPU", "1")
        .env("TACIT_TEST_POSTGRES_URL", &pg.url)
        .env("TACIT_REQUIRE_POSTGRES", "1");
    // Mesa's Vulkan loader complains on every start without a runtime directory (CI has none).
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("tacit-xdg-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    run_tests(&mut cmd)
}

/// Passed conformance cases per backend, collected from every test run's output: the
/// `conformance_cases!` macro instantiates each case as `cpu::case`, `gpu::case` (native wgpu)
/// and `webgpu::case` (the browser), top-level modules of their test crates. Unit tests inside
/// the library's backend modules (`backend::gpu::uniforms::tests::…`) are not cases.
static CONFORMANCE: Mutex<BTreeMap<&'static str, BTreeSet<String>>> = Mutex::new(BTreeMap::new());
const BACKENDS: [&str; 3] = ["cpu", "gpu", "webgpu"];

/// The backend and case of a passed conformance test's output line, if it is one.
fn conformance_case(line: &str) -> Option<(&'static str, &str)> {
    let name = line.strip_prefix("test ")?.strip_suffix(" ... ok")?;
    let (module, case) = name.split_once("::")?;
    let backend = BACKENDS.into_iter().find(|b| *b == module)?;
    (!case.is_empty() && !case.contains("::")).then_some((backend, case))
}

fn record_conformance(line: &str) {
    if let Some((backend, case)) = conformance_case(line) {
        if let Ok(mut map) = CONFORMANCE.lock() {
            map.entry(backend).or_default().insert(case.to_string());
        }
    }
}

/// Prints the number of passed conformance cases per backend and fails unless all three
/// backends passed the same list.
fn conformance_summary() -> Result {
    let map = CONFORMANCE.lock().map_err(|_| "poisoned")?.clone();
    let empty = BTreeSet::new();
    let lists: Vec<&BTreeSet<String>> = BACKENDS
        .iter()
        .map(|b| map.get(b).unwrap_or(&empty))
        .collect();
    println!(
        "conformance cases passed: cpu {}, gpu (native) {}, webgpu (browser) {}",
        lists[0].len(),
        lists[1].len(),
        lists[2].len()
    );
    if lists[0].is_empty() || lists.iter().any(|l| *l != lists[0]) {
        let all: BTreeSet<&String> = lists.iter().flat_map(|l| l.iter()).collect();
        let missing: Vec<String> = all
            .into_iter()
            .filter_map(|case| {
                let absent: Vec<&str> = BACKENDS
                    .iter()
                    .zip(&lists)
                    .filter(|(_, l)| !l.contains(case))
                    .map(|(b, _)| *b)
                    .collect();
                (!absent.is_empty()).then(|| format!("{case} (not on {})", absent.join(", ")))
            })
            .collect();
        return Err(format!(
            "the conformance suite did not pass the same cases on every backend: {missing:?}"
        ));
    }
    Ok(())
}

/// Runs cargo's test harness, echoing its output, and closes with one summary line over
/// every test binary (`tests: N passed, N failed, N skipped`), so a reader (or CI) sees the
/// totals rather than the last binary's count.
fn run_tests(cmd: &mut Command) -> Result {
    use std::io::{BufRead, BufReader};
    eprintln!("$ {}", describe(cmd));
    in_root(cmd);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    let (mut passed, mut failed, mut skipped) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| e.to_string())?;
        println!("{line}");
        record_conformance(&line);
        // node --test's TAP summary.
        for (prefix, total) in [
            ("# pass ", &mut passed),
            ("# fail ", &mut failed),
            ("# skipped ", &mut skipped),
        ] {
            if let Some(n) = line
                .strip_prefix(prefix)
                .and_then(|n| n.trim().parse::<u64>().ok())
            {
                *total += n;
            }
        }
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
            skipped += count("ignored");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    println!("tests: {passed} passed, {failed} failed, {skipped} skipped");
    if status.success() && failed == 0 && passed > 0 {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

/// The main job: the sync server on an embedded SQLite file and the demo chat page, both
/// started by `www/serve.mjs` (which stops both on Ctrl-C or SIGTERM).
fn demo(extra: &[String]) -> Result {
    let port = match extra {
        [] => "8080".to_string(),
        [flag, port] if flag == "--port" && port.parse::<u16>().is_ok() => port.clone(),
        _ => return Err("usage: cargo xtask demo [--port N]".into()),
    };
    setup()?;
    web::build_pkg()?;
    // Without them the page still runs, on the hashing featurizer (and says so).
    if let Err(e) = demo_files::install() {
        eprintln!("xtask demo: no MiniLM embeddings ({e}); the page uses the hashing featurizer");
    }
    run(cargo().args(["build", "-p", "tacit-server"]))?;
    let db = format!("sqlite://{}", root().join("target/demo/demo.db").display());
    let mut node = Command::new("node");
    node.arg("www/serve.mjs").args([
        "--server",
        "target/debug/tacit-server",
        "--db",
        &db,
        "--port",
        &port,
    ]);
    in_root(&mut node);
    #[cfg(unix)]
    {
        // Become the launcher, so that a SIGTERM sent to this process reaches it.
        use std::os::unix::process::CommandExt;
        eprintln!("$ {}", describe(&node));
        Err(format!("cannot start node: {}", node.exec()))
    }
    #[cfg(not(unix))]
    run(&mut node)
}

fn results() -> Result {
    setup()?;
    run(cargo().args(["build", "--release", "--bin", "tacit"]))?;
    let dir = root().join("results");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for protocol in PROTOCOLS {
        let json = format!("results/eval-{protocol}.json");
        let md = format!("results/eval-{protocol}.md");
        run(Command::new(root().join("target/release/tacit")).args([
            "eval",
            "--data",
            FIXTURE,
            "--protocol",
            protocol,
            "--seeds",
            "10",
            "--json",
            &json,
            "--markdown",
            &md,
        ]))?;
    }
    eprintln!("wrote results/eval-{{{}}}.{{json,md}}", PROTOCOLS.join(","));
    Ok(())
}

/// `tacit bench` on every backend of this machine, into `results/bench.{json,md}`.
fn bench() -> Result {
    setup()?;
    run(cargo().args(["build", "--release", "--bin", "tacit"]))?;
    std::fs::create_dir_all(root().join("results")).map_err(|e| e.to_string())?;
    run(Command::new(root().join("target/release/tacit")).args([
        "bench",
        "--json",
        "results/bench.json",
        "--markdown",
        "results/bench.md",
    ]))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(),
        Some("demo") => demo(&args[1..]),
        Some("results") => results(),
        Some("bench") => bench(),
        Some("pkg") => setup().and_then(|()| web::build_pkg()),
        Some("bench-flavours") => setup().and_then(|()| web::bench_flavours()),
        Some("bench-server") => server_bench::bench_server(),
        Some("bench-web") => bench_web::bench_web(&args[1..]),
        Some("bench-real-gpu") => real_gpu::bench_real_gpu(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("release") => release::release(),
        _ => Err("usage: cargo xtask <setup|test|demo [--port N]|results|bench|bench-server|bench-web|bench-real-gpu [--allow-software]|pkg|bench-flavours|fuzz [--seconds N] [--target NAME]|release>".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::conformance_case;

    #[test]
    fn only_the_suites_instantiations_count_as_conformance_cases() {
        assert_eq!(
            conformance_case("test gpu::forward_matches_the_f64_reference ... ok"),
            Some(("gpu", "forward_matches_the_f64_reference"))
        );
        assert_eq!(
            conformance_case("test webgpu::bad_input_is_refused_with_its_code ... ok"),
            Some(("webgpu", "bad_input_is_refused_with_its_code"))
        );
        // Unit tests inside the backend modules, failures and other lines are not cases.
        assert_eq!(
            conformance_case("test backend::cpu::tests::forward_rejects_bad_input ... ok"),
            None
        );
        assert_eq!(
            conformance_case(
                "test backend::gpu::uniforms::tests::a_misordered_field_is_caught ... ok"
            ),
            None
        );
        assert_eq!(conformance_case("test cpu::x ... FAILED"), None);
        assert_eq!(conformance_case("test gpu::mod::x ... ok"), None);
        assert_eq!(conformance_case("running 8 tests"), None);
    }
}
