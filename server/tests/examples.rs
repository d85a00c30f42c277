//! Example counts are client-supplied numbers: bounded where they enter, summed without
//! overflow, and capped in the FedAvg weight.
//! - n_examples = 2⁶³ − 1 is refused (422 `examples_over_bound`) and leaves the model
//!   unchanged; honest rounds keep closing and `/meta` keeps answering.
//! - Even under a policy that admits such counts, two of them in one round close the round
//!   (no overflow, no dropped connection) and `/meta` answers 200.
//! - One client claiming 10¹² examples among nine honest ones at 100 weighs what one at the
//!   cap does: the step is the mean computed here with weights min(n, cap), not its delta.

mod common;

use common::*;
use tacit_rm::Head;

const HUGE: u64 = i64::MAX as u64;

fn huge_example_count_is_refused(backend: Backend) {
    let Some(db) = database(backend, "examples_refused") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let mallory = token(&db.url, "mallory", false);
    let honest: Vec<String> = (0..2)
        .map(|i| token(&db.url, &format!("h{i}"), false))
        .collect();
    let server = Server::start(
        &db.url,
        &["--round-updates", "2", "--round-seconds", "3600"],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 41).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);

    for claimed in [HUGE, u64::MAX, 1_000_001] {
        let body = delta(&config, values(n, 1, 0.01), 1, claimed)
            .to_bytes()
            .unwrap();
        let r = push(&server, &mallory, "m", &format!("k{claimed}"), body);
        assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(error_code(&r), "examples_over_bound");
    }
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.accepted_updates, m.accepted_examples),
        (1, 0, 0)
    );
    assert_eq!(pull(&server, &admin, "m").head, base);

    // Honest pushes after the refusals: the round closes to the weighted mean.
    let mut want = vec![0.0; n];
    for (i, t) in honest.iter().enumerate() {
        let d = values(n, 10 + i as u64, 0.01);
        let body = delta(&config, d.clone(), 1, 1_000_000).to_bytes().unwrap();
        assert_eq!(push(&server, t, "m", "k", body).status, 202);
        for (w, v) in want.iter_mut().zip(&d) {
            *w += f64::from(*v) / 2.0;
        }
    }
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.accepted_updates, m.accepted_examples),
        (2, 2, 2_000_000)
    );
    assert_close(&step(&base, &pull(&server, &admin, "m").head), &want, 1e-6);
}

fn maximal_counts_sum_without_overflow(backend: Backend) {
    let Some(db) = database(backend, "examples_saturate") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let clients: Vec<String> = (0..2)
        .map(|i| token(&db.url, &format!("c{i}"), false))
        .collect();
    let max = HUGE.to_string();
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "2",
            "--round-seconds",
            "3600",
            "--max-examples-per-update",
            &max,
        ],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 42).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let mut want = vec![0.0; n];
    for (i, t) in clients.iter().enumerate() {
        let d = values(n, 20 + i as u64, 0.01);
        let body = delta(&config, d.clone(), 1, HUGE).to_bytes().unwrap();
        let r = push(&server, t, "m", "k", body);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        // Both weigh the cap: the plain mean.
        for (w, v) in want.iter_mut().zip(&d) {
            *w += f64::from(*v) / 2.0;
        }
    }
    let m = meta(&server, &admin, "m");
    assert_eq!((m.version, m.rounds, m.accepted_updates), (2, 1, 2));
    // 2·(2⁶³ − 1) does not fit an i64: reported saturated, not as a failure.
    assert!(m.accepted_examples >= HUGE, "{}", m.accepted_examples);
    assert_close(&step(&base, &pull(&server, &admin, "m").head), &want, 1e-6);
    // The server still takes and aggregates pushes.
    let body = delta(&config, values(n, 30, 0.01), 2, 1)
        .to_bytes()
        .unwrap();
    assert_eq!(
        push(&server, &clients[0], "m", "k2", body.clone()).status,
        202
    );
    assert_eq!(push(&server, &clients[1], "m", "k2", body).status, 202);
    assert_eq!(meta(&server, &admin, "m").version, 3);
}

fn fedavg_weight_cannot_be_bought(backend: Backend) {
    let Some(db) = database(backend, "examples_weight_cap") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "10",
            "--round-seconds",
            "3600",
            "--max-examples-per-update",
            "1000000000000",
            "--fedavg-weight-cap",
            "100",
        ],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 43).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    // Nine honest clients at 100 examples, and one claiming 10¹² with a delta of its own
    // (norm ≈ 1.3, under the clip bound of 10: not clipped).
    let attacker = vec![0.2f32; n];
    let mut want = vec![0.0; n];
    for i in 0..10u64 {
        let (d, claimed) = if i < 9 {
            (values(n, 50 + i, 0.01), 100)
        } else {
            (attacker.clone(), 1_000_000_000_000)
        };
        let t = token(&db.url, &format!("c{i}"), false);
        let body = delta(&config, d.clone(), 1, claimed).to_bytes().unwrap();
        assert_eq!(push(&server, &t, "m", "k", body).status, 202);
        // Weights min(n, 100) = 100 for all ten: the plain mean.
        for (w, v) in want.iter_mut().zip(&d) {
            *w += f64::from(*v) / 10.0;
        }
    }
    assert_eq!(meta(&server, &admin, "m").version, 2);
    let got = step(&base, &pull(&server, &admin, "m").head);
    assert_close(&got, &want, 1e-6);
    // The attacker's pull is a tenth of its delta, far from the delta itself (which an
    // uncapped weight of 10¹² against 900 would have made the step).
    let distance = got
        .iter()
        .zip(&attacker)
        .map(|(g, a)| (g - f64::from(*a)).powi(2))
        .sum::<f64>()
        .sqrt();
    let attacker_norm = attacker
        .iter()
        .map(|a| f64::from(*a).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        distance > 0.8 * attacker_norm,
        "{distance} vs {attacker_norm}"
    );
}

on_both_backends!(
    huge_example_count_is_refused,
    maximal_counts_sum_without_overflow,
    fedavg_weight_cannot_be_bought
);
