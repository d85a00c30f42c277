//! `cargo xtask bench-server`: the sync server's load figure (`tacit-server bench`) on SQLite
//! and on a throwaway Postgres cluster, into `results/server-bench.{json,md}`.

use std::process::Command;

use crate::{cargo, postgres, root, run, setup, Result};

pub fn bench_server() -> Result {
    setup()?;
    run(cargo().args(["build", "--release", "-p", "tacit-server"]))?;
    std::fs::create_dir_all(root().join("results")).map_err(|e| e.to_string())?;
    let pg = postgres::Cluster::start()?;
    run(
        Command::new(root().join("target/release/tacit-server")).args([
            "bench",
            "--postgres",
            &pg.url,
            "--json",
            "results/server-bench.json",
            "--markdown",
            "results/server-bench.md",
        ]),
    )
}
