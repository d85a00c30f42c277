//! `tacit-server bench` end to end, small: 30 clients (3 of them malicious) for 4 s with one
//! SIGKILL of the server, on SQLite and — when a test Postgres is configured — on Postgres in
//! the same command. The command checks its own accounting (every 202 stored once, no
//! refused push stored, the rate limit held, rounds closed, a finite global) and exits
//! non-zero on any violation; here its exit status and its report are checked.

mod common;

use std::process::Command;

use common::*;

#[test]
fn load_and_chaos_run_holds() {
    let postgres = database(Backend::Postgres, "bench");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let markdown = dir.path().join("bench.md");
    let mut command = Command::new(BIN);
    command
        .args([
            "bench",
            "--clients",
            "30",
            "--seconds",
            "4",
            "--chaos-kills",
            "1",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .env("RUST_LOG", "error");
    if let Some(db) = &postgres {
        command.args(["--postgres", &db.url]);
    }
    let out = command.output().expect("run tacit-server bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(reports.len(), 1 + usize::from(postgres.is_some()));
    for r in &reports {
        assert_eq!(r["violations"], serde_json::json!([]), "{r}");
        assert_eq!(
            (
                r["malicious_clients"].as_u64(),
                r["kills_survived"].as_u64()
            ),
            (Some(3), Some(1))
        );
        assert!(r["accepted_pushes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["rounds_closed"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["global_finite"], true);
        // The three attacks of three malicious clients, each refused with its code.
        for (attack, code) in [
            ("examples-over-cap", "examples_over_bound"),
            ("norm-over-bound", "norm_over_bound"),
            ("nan-delta", "non_finite"),
        ] {
            let answers = &r["malicious"][attack]["answers"];
            assert!(
                answers[code].as_u64().unwrap_or(0) > 0,
                "{attack}: {answers}"
            );
            assert!(answers.get("accepted").is_none(), "{attack}: {answers}");
        }
    }
    let md = std::fs::read_to_string(&markdown).unwrap();
    assert!(md.contains("| sqlite | 30 (3) |"), "{md}");
}
