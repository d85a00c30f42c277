//! `cargo xtask bench-server`: the sync server's load figures (`tacit-server bench`) on SQLite
//! and on a throwaway Postgres cluster:
//! - the plain run, `results/server-bench.{json,md}`: 8 honest clients for 10 s, no rate
//!   limit, no kills — the throughput of the push path alone;
//! - the load and chaos run, `results/server-load.{json,md}`: 1000 clients (a tenth of them
//!   malicious) for 60 s at the server's default rate limit, with 3 SIGKILLs of the server;
//!   the command fails if the accounting does.

use std::process::Command;

use crate::{cargo, postgres, root, run, setup, Result};

pub fn bench_server() -> Result {
    setup()?;
    run(cargo().args(["build", "--release", "-p", "tacit-server"]))?;
    std::fs::create_dir_all(root().join("results")).map_err(|e| e.to_string())?;
    let pg = postgres::Cluster::start()?;
    let bench = |name: &str, extra: &[&str]| {
        run(Command::new(root().join("target/release/tacit-server"))
            .args(["bench", "--postgres", &pg.url])
            .args(extra)
            .args(["--json", &format!("results/{name}.json")])
            .args(["--markdown", &format!("results/{name}.md")]))
    };
    bench(
        "server-bench",
        &[
            "--clients",
            "8",
            "--seconds",
            "10",
            "--client-pushes-per-minute",
            "1000000",
        ],
    )?;
    bench(
        "server-load",
        &[
            "--clients",
            "1000",
            "--seconds",
            "60",
            "--malicious-fraction",
            "0.1",
            "--chaos-kills",
            "3",
        ],
    )
}
