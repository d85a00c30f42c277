//! The `tacit` binary end to end: init → train → score, eval JSON, and error exits.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;
use std::process::Command;

fn tacit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tacit"))
        .args(args)
        .output()
        .expect("runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tacit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn init_train_score_round_trip() {
    let fixture = common::fixture();
    let fixture = fixture.to_str().unwrap();
    let init = tmp("init.safetensors");
    let out = tacit(&[
        "init",
        "--dim",
        "384",
        "--hidden",
        "16",
        "--out",
        init.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = tacit_rm::store::load(&init).unwrap();
    assert_eq!(w.head.config.hidden, vec![16]);

    let trained = tmp("trained.safetensors");
    let out = tacit(&[
        "train",
        "--data",
        fixture,
        "--init",
        init.to_str().unwrap(),
        "--objective",
        "noise-ips",
        "--epochs",
        "3",
        "--out",
        trained.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("epoch   3/3"));
    let t = tacit_rm::store::load(&trained).unwrap();
    assert_ne!(t.head, w.head);
    assert_eq!(t.objective.map(|o| o.name()), Some("noise-ips"));

    let scores = tmp("scores.json");
    let out = tacit(&[
        "score",
        "--weights",
        trained.to_str().unwrap(),
        "--data",
        fixture,
        "--out",
        scores.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let s: Vec<f32> = serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();
    let ds = tacit_rm::data::Dataset::load(&common::fixture()).unwrap();
    assert_eq!(
        s,
        tacit_rm::backend::cpu::score(&t.head, ds.emb.view()).unwrap(),
        "CLI scores equal library scores"
    );
}

#[test]
fn eval_writes_json_and_markdown() {
    let json = tmp("eval.json");
    let md = tmp("eval.md");
    let fixture = common::fixture();
    let out = tacit(&[
        "eval",
        "--data",
        fixture.to_str().unwrap(),
        "--protocol",
        "label",
        "--seeds",
        "2",
        "--methods",
        "naive,ips,oracle",
        "--json",
        json.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["config"]["sim"]["protocol"], "label");
    assert_eq!(
        v["methods"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["naive", "ips", "oracle"]
    );
    let auroc = v["methods"]["oracle"]["auroc"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auroc));
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.starts_with("| method | AUROC") && table.contains("| oracle |"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), table.trim());
}

#[test]
fn errors_exit_2_with_a_code() {
    let fixture = common::fixture();
    let out = tacit(&[
        "eval",
        "--data",
        fixture.to_str().unwrap(),
        "--methods",
        "naive,nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[unknown_name]"));
    let out = tacit(&[
        "score",
        "--weights",
        fixture.to_str().unwrap(),
        "--data",
        fixture.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error[incompatible_weights]"),
        "a data file is not weights"
    );
    let out = tacit(&["eval", "--data", "/nonexistent.safetensors"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[io]"));
    let out = tacit(&["eval", "--data", fixture.to_str().unwrap(), "--flip", "0.1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[invalid_config]"));
}

/// A small `tacit eval --protocol users` run on the dev fixture (1 seed, 8 + 4 users, 40 turns
/// in 2 rounds) writing its JSON to `json`.
fn small_users_run(data: &std::path::Path, json: &std::path::Path) -> Vec<String> {
    [
        "eval",
        "--protocol",
        "users",
        "--data",
        data.to_str().unwrap(),
        "--seeds",
        "1",
        "--users",
        "8",
        "--new-users",
        "4",
        "--turns",
        "40",
        "--rounds",
        "2",
        "--new-user-turns",
        "0,10",
        "--epochs",
        "10",
        "--json",
        json.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// `tacit eval --protocol users` on the dev multi-user fixture writes exactly the documented
/// JSON and a markdown table; the oracle (fitted to the true utilities) beats the crowd's
/// model, as the fixture's construction (opposite tastes) implies.
#[test]
fn eval_protocol_users_writes_the_documented_json() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/users_dev.safetensors");
    let json = tmp("users.json");
    let md = tmp("users.md");
    let args = small_users_run(&data, &json);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--markdown", md.to_str().unwrap()]);
    let out = tacit(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "dp",
            "new_users",
            "new_users_curve",
            "protocol",
            "seeds",
            "systems",
            "users"
        ]
    );
    assert_eq!(
        (&v["protocol"], &v["seeds"], &v["users"], &v["new_users"]),
        (
            &serde_json::json!("users"),
            &serde_json::json!(1),
            &serde_json::json!(8),
            &serde_json::json!(4)
        )
    );
    let systems = [
        "global", "local", "personal", "ditto", "mix", "pooled", "oracle",
    ];
    let acc = |table: &serde_json::Value, s: &str| {
        let a = &table[s]["pairwise_accuracy"];
        assert_eq!(a.as_object().unwrap().len(), 2, "{s}: {a}");
        assert!(a["std"].as_f64().unwrap() >= 0.0);
        a["mean"].as_f64().unwrap()
    };
    for s in systems {
        let m = acc(&v["systems"], s);
        assert!((0.0..=1.0).contains(&m), "{s}: {m}");
    }
    let curve = v["new_users_curve"].as_object().unwrap();
    assert_eq!(curve.keys().collect::<Vec<_>>(), ["0", "10"]);
    for s in systems {
        acc(&curve["10"], s);
    }
    assert!(
        acc(&v["systems"], "oracle") > acc(&v["systems"], "global") + 0.05,
        "{v}"
    );
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(
        table.contains("| personal |") && table.contains("New users"),
        "{table}"
    );
    assert!(v["dp"].is_null(), "{}", v["dp"]);

    // The same run under DP-FedAvg at ε = 1: the noise multiplier the accountant gives for
    // 2 rounds at q = 1 and the federated systems' shared parts noised. (Every system sees
    // the turns in the order of the `personal` system's model, which is federated, so the
    // feedback itself changes; only the oracle, fitted to the true utilities, is the same.)
    let dp_json = tmp("users-dp.json");
    let mut args = small_users_run(&data, &dp_json);
    args.extend(["--dp-epsilon", "1", "--dp-delta", "1e-5"].map(String::from));
    let out = tacit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dp_json).unwrap()).unwrap();
    let z = tacit_rm::sync::privacy::noise_multiplier_for(1.0, 1.0, 2, 1e-5).unwrap();
    assert_eq!(
        (
            &d["dp"]["epsilon"],
            &d["dp"]["delta"],
            &d["dp"]["rounds"],
            &d["dp"]["sampling_rate"]
        ),
        (
            &serde_json::json!(1.0),
            &serde_json::json!(1e-5),
            &serde_json::json!(2),
            &serde_json::json!(1.0)
        )
    );
    assert_eq!(d["dp"]["noise_multiplier"].as_f64().unwrap(), z);
    // The exact Gaussian mechanism needs z = 5.276 for (1, 1e-5) over 2 rounds (μ = √2/z =
    // 0.2681, the μ-GDP bisection quoted in src/sync/privacy.rs's test); RDP needs a little
    // more.
    assert!((5.276..5.276 * 1.25).contains(&z), "{z}");
    assert_eq!(acc(&d["systems"], "oracle"), acc(&v["systems"], "oracle"));
    assert_ne!(acc(&d["systems"], "global"), acc(&v["systems"], "global"));
    // An ε that is not a positive number, or one no noise reaches, or a δ outside (0, 1):
    // refused with its code before any training, nothing written.
    for bad in [
        ["--dp-epsilon", "0"],
        ["--dp-epsilon", "1e-9"],
        ["--dp-delta", "1.5"],
    ] {
        let refused = tmp("users-dp-refused.json");
        let _ = std::fs::remove_file(&refused);
        let mut args = small_users_run(&data, &refused);
        args.extend(bad.map(String::from));
        if bad[0] == "--dp-delta" {
            args.extend(["--dp-epsilon", "1"].map(String::from));
        }
        let out = tacit(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("error[invalid_config]"),
            "{bad:?}: {err}"
        );
        assert!(!refused.exists(), "{bad:?}");
    }

    // The replay window and the basis options: bad values refused with their codes before
    // any training, nothing written.
    for (bad, code) in [
        (["--replay-turns", "5000"], "invalid_config"),
        (["--replay-turns", "1.5"], "invalid value"),
        (["--basis-width", "0"], "invalid_config"),
        (["--basis-activation", "sigmoid"], "unknown_name"),
    ] {
        let refused = tmp("users-option-refused.json");
        let _ = std::fs::remove_file(&refused);
        let mut args = small_users_run(&data, &refused);
        args.extend(bad.map(String::from));
        let out = tacit(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(code),
            "{bad:?}: {err}"
        );
        assert!(!refused.exists(), "{bad:?}");
    }

    // A labelled file without utilities is refused with its code, nothing written.
    let plain = common::fixture();
    let out = tacit(&[
        "eval",
        "--protocol",
        "users",
        "--data",
        plain.to_str().unwrap(),
        "--seeds",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid_data") && err.contains("utility"),
        "{err}"
    );
}
