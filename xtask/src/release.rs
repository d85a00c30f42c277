//! `cargo xtask release`: the server as users run it, without a Rust toolchain of their own.
//! Builds `tacit-server` in the release profile (the lockfile's versions: `--locked`) and
//! writes `target/dist/`: the binary, its `SHA256SUMS` and the `Containerfile`
//! (`server/Containerfile`), so that `docker build target/dist` makes the image from exactly
//! the binary that was checked.

use std::process::Command;

use crate::{cargo, output, root, run, Result};

pub fn release() -> Result {
    run(cargo().args(["build", "--release", "--locked", "-p", "tacit-server"]))?;
    let dist = root().join("target/dist");
    std::fs::create_dir_all(&dist).map_err(|e| format!("cannot create target/dist: {e}"))?;
    let copy = |from: &str, to: &str| {
        std::fs::copy(root().join(from), dist.join(to))
            .map(|_| ())
            .map_err(|e| format!("cannot copy {from} into target/dist: {e}"))
    };
    copy("target/release/tacit-server", "tacit-server")?;
    copy("server/Containerfile", "Containerfile")?;
    let sums = output(
        Command::new("sha256sum")
            .args(["tacit-server", "Containerfile"])
            .current_dir(&dist),
    )
    .ok_or("sha256sum failed (coreutils is needed)")?;
    std::fs::write(dist.join("SHA256SUMS"), &sums)
        .map_err(|e| format!("cannot write target/dist/SHA256SUMS: {e}"))?;
    // The binary must start: a release that cannot print its version is no release.
    let version = output(Command::new(dist.join("tacit-server")).arg("--version"))
        .ok_or("target/dist/tacit-server does not run")?;
    eprintln!(
        "target/dist/: {} (tacit-server, Containerfile, SHA256SUMS)\n{sums}",
        version.trim()
    );
    Ok(())
}
