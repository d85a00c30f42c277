//! Client-level DP-FedAvg with the accountant (issue 14): `/privacy` reports the ε of
//! `tacit_rm::sync::privacy` for the rounds released; the round that would exceed the budget
//! is refused (model at its version, updates pending, logged) and released once the budget
//! allows it; the noise has std z·C/cohort; bad settings and changed parameters stop the
//! server at start-up.

mod common;

use common::*;
use tacit_rm::sync::privacy::{self, PrivacyBudget, PrivacyReport};
use tacit_rm::{Head, HeadConfig};

fn privacy_path(name: &str) -> String {
    format!("/v1/models/{name}/privacy")
}

/// `GET /privacy` as JSON, which must be 200.
fn privacy_json(server: &Server, token: &str, name: &str) -> serde_json::Value {
    let r = request(
        server,
        "GET",
        &privacy_path(name),
        &[("Authorization", &bearer(token))],
        vec![],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("privacy JSON")
}

fn report(value: &serde_json::Value) -> PrivacyReport {
    assert_eq!(value["dp"], true, "{value}");
    serde_json::from_value(value.clone()).expect("the library's PrivacyReport")
}

/// One push of a small delta on top of the current version; 202.
fn push_one(server: &Server, token: &str, name: &str, key: &str, seed: u64) {
    let config = small_config();
    let version = meta(server, token, name).version;
    let body = delta(&config, values(config.num_params(), seed, 0.01), version, 5)
        .to_bytes()
        .unwrap();
    let r = push(server, token, name, key, body);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

/// (a) After k rounds, the accountant's ε for (z, q, k, δ): q = 1 (population = cohort = 1),
/// z = 4, 10 rounds, δ = 1e-5 is a row of tests/privacy.rs's table (dp-accounting 0.6.0 and
/// Opacus 1.6.0: 3.61710); then q = 0.1 by the environment variables. An unknown model is
/// 404; no token 401.
fn privacy_reports_the_accountants_epsilon(backend: Backend) {
    let Some(db) = database(backend, "privacy_epsilon") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let mut server = Server::start(
        &db.url,
        &[
            "--dp-noise-multiplier",
            "4",
            "--population",
            "1",
            "--round-updates",
            "1",
            "--dp-budget-epsilon",
            "100",
            "--clip-norm",
            "1",
        ],
    );
    let base = Head::init(&small_config(), 3).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let fresh = report(&privacy_json(&server, &alice, "m"));
    assert_eq!(
        (fresh.rounds, fresh.epsilon, fresh.sampling_rate),
        (0, 0.0, 1.0)
    );
    for k in 0..10u64 {
        push_one(&server, &alice, "m", &format!("k{k}"), 100 + k);
        assert_eq!(
            meta(&server, &alice, "m").version,
            2 + k,
            "one round per push"
        );
    }
    let answer = privacy_json(&server, &alice, "m");
    let got = report(&answer);
    let want = privacy::epsilon(4.0, 1.0, 10, 1e-5).unwrap().epsilon;
    assert_eq!(
        (
            got.rounds,
            got.noise_multiplier,
            got.sampling_rate,
            got.delta,
            got.budget_epsilon
        ),
        (10, 4.0, 1.0, 1e-5, 100.0)
    );
    assert!(close(got.epsilon, want, 1e-12), "{} vs {want}", got.epsilon);
    // The published accountants, to their six printed digits.
    assert!((got.epsilon - 3.61710).abs() < 1e-5, "{}", got.epsilon);
    assert_eq!(answer["exhausted"], false);

    let r = request(
        &server,
        "GET",
        &privacy_path("nope"),
        &[("Authorization", &bearer(&alice))],
        vec![],
    );
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = request(&server, "GET", &privacy_path("m"), &[], vec![]);
    assert_eq!(r.status, 401);
    drop(server);

    // q = cohort / population = 2 / 20 by the TACIT_* variables, on a new model of another
    // database (the stored parameters of "m" are z = 4, q = 1).
    let Some(db2) = database(backend, "privacy_epsilon_env") else {
        return;
    };
    let admin2 = token(&db2.url, "admin", true);
    let clients: Vec<String> = (0..2)
        .map(|i| token(&db2.url, &format!("c{i}"), false))
        .collect();
    server = Server::start_with_env(
        &db2.url,
        &[],
        &[
            ("TACIT_DP_NOISE_MULTIPLIER", "1.1"),
            ("TACIT_POPULATION", "20"),
            ("TACIT_ROUND_UPDATES", "2"),
            ("TACIT_DP_BUDGET_EPSILON", "50"),
            ("TACIT_DP_DELTA", "1e-6"),
            ("TACIT_CLIP_NORM", "1"),
        ],
    );
    assert_eq!(put_model(&server, &admin2, "m", &base).status, 200);
    for round in 0..3u64 {
        for (i, c) in clients.iter().enumerate() {
            push_one(&server, c, "m", &format!("r{round}"), 10 * round + i as u64);
        }
    }
    assert_eq!(meta(&server, &admin2, "m").version, 4);
    let got = report(&privacy_json(&server, &admin2, "m"));
    let want = privacy::epsilon(1.1, 0.1, 3, 1e-6).unwrap().epsilon;
    assert_eq!((got.rounds, got.sampling_rate, got.delta), (3, 0.1, 1e-6));
    assert!(close(got.epsilon, want, 1e-12), "{} vs {want}", got.epsilon);
}

/// DP off: `/privacy` answers `{"dp": false}` (and 404 for an unknown model).
fn privacy_off_says_so(backend: Backend) {
    let Some(db) = database(backend, "privacy_off") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let server = Server::start(&db.url, &[]);
    let base = Head::init(&small_config(), 3).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    assert_eq!(
        privacy_json(&server, &admin, "m"),
        serde_json::json!({"dp": false})
    );
    let r = request(
        &server,
        "GET",
        &privacy_path("nope"),
        &[("Authorization", &bearer(&admin))],
        vec![],
    );
    assert_eq!(r.status, 404);
}

/// (b) A budget between ε(R) and ε(R + 1) (R = 3, computed with the accountant): round R + 1
/// is not released — the model stays at its version, the update stays pending, `/privacy`
/// shows R rounds and `exhausted`, the log says why — across a restart too; a restart with
/// other DP parameters, or without DP, is refused; one with a larger budget releases the
/// pending updates in the next round.
fn the_round_over_budget_is_refused(backend: Backend) {
    let Some(db) = database(backend, "privacy_budget") else {
        return;
    };
    let (z, q, delta) = (1.0, 1.0, 1e-5);
    let e3 = privacy::epsilon(z, q, 3, delta).unwrap().epsilon;
    let e4 = privacy::epsilon(z, q, 4, delta).unwrap().epsilon;
    assert!(e3 < e4);
    let budget = (e3 + e4) / 2.0;
    let r = PrivacyBudget::new(z, q, delta, budget)
        .unwrap()
        .rounds_within_budget();
    assert_eq!(r, 3);
    let budget_text = budget.to_string();
    let args = |budget: &str| -> Vec<String> {
        [
            "--dp-noise-multiplier",
            "1",
            "--population",
            "1",
            "--round-updates",
            "1",
            "--clip-norm",
            "1",
            "--dp-budget-epsilon",
            budget,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let argv = args(&budget_text);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let mut server = Server::start_logged(&db.url, &argv, &log);
    let base = Head::init(&small_config(), 4).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    for k in 0..3u64 {
        push_one(&server, &alice, "m", &format!("k{k}"), k);
    }
    assert_eq!(meta(&server, &alice, "m").version, 4);
    assert!(!server.log().contains("round refused"), "{}", server.log());
    let before = pull(&server, &alice, "m");

    // Round 4 would spend e4 > budget.
    push_one(&server, &alice, "m", "k3", 3);
    let m = meta(&server, &alice, "m");
    assert_eq!((m.version, m.rounds, m.pending_updates), (4, 3, 1));
    assert_eq!(
        pull(&server, &alice, "m").head.to_flat(),
        before.head.to_flat()
    );
    let answer = privacy_json(&server, &alice, "m");
    let got = report(&answer);
    assert_eq!(got.rounds, 3);
    assert!(close(got.epsilon, e3, 1e-12) && got.epsilon <= budget);
    assert_eq!(
        (
            answer["exhausted"].clone(),
            answer["rounds_within_budget"].clone()
        ),
        (true.into(), 3.into())
    );
    let logged = server.log();
    assert!(
        logged.contains("round refused") && logged.contains("privacy budget"),
        "{logged}"
    );
    // Still refused, and still kept, across a restart.
    push_one(&server, &alice, "m", "k4", 4);
    server.kill();
    server.restart();
    push_one(&server, &alice, "m", "k5", 5);
    let m = meta(&server, &alice, "m");
    assert_eq!((m.version, m.rounds, m.pending_updates), (4, 3, 3));
    assert_eq!(report(&privacy_json(&server, &alice, "m")).rounds, 3);
    server.kill();

    // Other parameters than the stored ones, or no DP: refused at start-up.
    let mut other = argv.clone();
    other[1] = "2";
    let refused = serve_refused(&db.url, &other, &[]);
    assert!(
        refused.contains("other DP parameters") && refused.contains("noise multiplier 2"),
        "{refused}"
    );
    let refused = serve_refused(&db.url, &["--population", "1"], &[]);
    assert!(refused.contains("need --dp-noise-multiplier"), "{refused}");
    let refused = serve_refused(&db.url, &[], &[]);
    assert!(refused.contains("without noise"), "{refused}");
    let mut other_delta = argv.clone();
    other_delta.extend(["--dp-delta", "1e-6"]);
    let refused = serve_refused(&db.url, &other_delta, &[]);
    assert!(refused.contains("delta 0.000001 configured"), "{refused}");

    // A larger budget (the operator's decision): the three pending updates, one client's,
    // are released as one round, counted once.
    let larger = args(&e4.to_string());
    let larger: Vec<&str> = larger.iter().map(String::as_str).collect();
    let server = Server::start_logged(&db.url, &larger, &log);
    push_one(&server, &alice, "m", "k6", 6);
    let m = meta(&server, &alice, "m");
    assert_eq!((m.version, m.rounds, m.pending_updates), (5, 4, 0));
    let answer = privacy_json(&server, &alice, "m");
    let got = report(&answer);
    assert_eq!((got.rounds, got.budget_epsilon), (4, e4));
    assert!(close(got.epsilon, e4, 1e-12));
    assert_eq!(answer["exhausted"], true);
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM updates WHERE status = 'aggregated'"
        ),
        7
    );
}

/// (c) The released global is the DP-FedAvg estimate (here the plain mean of the clipped
/// deltas: the round has exactly the expected cohort) plus noise of std z·C/cohort. With
/// n = 32 897 coordinates the sample std of Gaussian noise has a standard error of
/// σ/√(2n) ≈ 0.0039 σ, so the 20 % band is ≈ 51 standard errors wide (and the mean's
/// 0.1 σ band ≈ 18): a false failure has probability far below 1e-50, whatever the seed.
fn the_noise_has_std_z_c_over_cohort(backend: Backend) {
    let Some(db) = database(backend, "privacy_noise") else {
        return;
    };
    let (z, clip_norm, cohort) = (1.0, 1.0, 2u64);
    let sigma = z * clip_norm / cohort as f64;
    let admin = token(&db.url, "admin", true);
    let server = Server::start(
        &db.url,
        &[
            "--dp-noise-multiplier",
            "1",
            "--population",
            "4",
            "--round-updates",
            "2",
            "--clip-norm",
            "1",
            "--dp-budget-epsilon",
            "100",
            "--round-seconds",
            "3600",
        ],
    );
    let config = HeadConfig::new(512, &[64]);
    let n = config.num_params();
    assert_eq!(n, 32_897);
    let base = Head::init(&config, 9).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let mut clipped = Vec::new();
    for i in 0..cohort {
        let t = token(&db.url, &format!("c{i}"), false);
        // Norm ≈ 0.01·√n ≈ 1.8: clipped to 1.
        let d = values(n, 900 + i, 0.01);
        let body = delta(&config, d.clone(), 1, 7).to_bytes().unwrap();
        assert_eq!(push(&server, &t, "m", "k", body).status, 202);
        clipped.push(clip(&as_f64(&d), clip_norm));
    }
    assert_eq!(meta(&server, &admin, "m").version, 2);
    let mean: Vec<f64> = (0..n)
        .map(|j| clipped.iter().map(|c| c[j]).sum::<f64>() / cohort as f64)
        .collect();
    let plain = clip(&mean, clip_norm);
    let got = step(&base, &pull(&server, &admin, "m").head);
    let noise: Vec<f64> = got.iter().zip(&plain).map(|(g, p)| g - p).collect();
    let avg = noise.iter().sum::<f64>() / n as f64;
    let std = (noise.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    assert!(
        (std - sigma).abs() < 0.2 * sigma,
        "noise std {std}, want {sigma}"
    );
    assert!(avg.abs() < 0.1 * sigma, "noise mean {avg}");
    let r = report(&privacy_json(&server, &admin, "m"));
    assert_eq!((r.rounds, r.sampling_rate), (1, 0.5));
}

/// (d) Bad DP settings stop the server at start-up, saying which.
fn bad_dp_settings_are_refused_at_start(backend: Backend) {
    let Some(db) = database(backend, "privacy_flags") else {
        return;
    };
    let on = [
        "--dp-noise-multiplier",
        "1",
        "--population",
        "10",
        "--dp-budget-epsilon",
        "3",
    ];
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { on.iter().chain(extra).copied().collect() };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--dp-noise-multiplier", "1", "--population", "10"],
            "needs --dp-budget-epsilon",
        ),
        (
            vec!["--dp-noise-multiplier", "1", "--dp-budget-epsilon", "3"],
            "needs --population",
        ),
        (
            vec!["--dp-budget-epsilon", "3"],
            "need --dp-noise-multiplier",
        ),
        (with(&["--clip-norm", "0"]), "--clip-norm must be positive"),
        (with(&["--noise-std", "0.1"]), "exclusive"),
        (with(&["--aggregator", "median"]), "needs --aggregator mean"),
        (with(&["--dp-delta", "1"]), "--dp-delta must be in (0, 1)"),
        (
            vec![
                "--dp-noise-multiplier",
                "1",
                "--population",
                "0",
                "--dp-budget-epsilon",
                "3",
            ],
            "--population must be at least 1",
        ),
        (
            vec![
                "--dp-noise-multiplier",
                "0",
                "--population",
                "10",
                "--dp-budget-epsilon",
                "3",
            ],
            "--dp-noise-multiplier must be positive",
        ),
        (
            vec![
                "--dp-noise-multiplier",
                "1",
                "--population",
                "10",
                "--dp-budget-epsilon",
                "inf",
            ],
            "--dp-budget-epsilon must be positive",
        ),
        (vec!["--dp-noise-multiplier", "lots"], "invalid value"),
    ];
    for (args, want) in cases {
        let stderr = serve_refused(&db.url, &args, &[]);
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    }
    // The environment variables are read (and checked) the same way.
    let stderr = serve_refused(
        &db.url,
        &[],
        &[
            ("TACIT_DP_NOISE_MULTIPLIER", "1"),
            ("TACIT_POPULATION", "5"),
        ],
    );
    assert!(stderr.contains("needs --dp-budget-epsilon"), "{stderr}");
}

/// A database of schema 3 (before the accountant's table) is migrated at start; its model's
/// rounds from before DP are not counted, the first round under DP is round 1 of the account.
fn a_database_of_schema_3_gains_the_accountant(backend: Backend) {
    let Some(db) = database(backend, "privacy_migrate") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let mut server = Server::start(&db.url, &["--round-updates", "1"]);
    let base = Head::init(&small_config(), 5).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    push_one(&server, &admin, "m", "plain", 1);
    assert_eq!(meta(&server, &admin, "m").version, 2);
    server.kill();
    execute(&db.url, "DROP TABLE model_privacy");
    execute(&db.url, "DELETE FROM schema_migrations WHERE version = 4");
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "1",
            "--dp-noise-multiplier",
            "2",
            "--population",
            "100",
            "--dp-budget-epsilon",
            "10",
        ],
    );
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM schema_migrations WHERE version = 4"
        ),
        1
    );
    assert_eq!(report(&privacy_json(&server, &admin, "m")).rounds, 0);
    push_one(&server, &admin, "m", "dp", 2);
    let got = report(&privacy_json(&server, &admin, "m"));
    assert_eq!((got.rounds, got.sampling_rate), (1, 0.01));
    assert_eq!(meta(&server, &admin, "m").version, 3);
}

on_both_backends!(
    a_database_of_schema_3_gains_the_accountant,
    privacy_reports_the_accountants_epsilon,
    privacy_off_says_so,
    the_round_over_budget_is_refused,
    the_noise_has_std_z_c_over_cohort,
    bad_dp_settings_are_refused_at_start,
);
