//! A poisoned client under the robust aggregators: four honest clients and one pushing a
//! huge delta (within the refusal bound, so it is accepted and must be neutralised by the
//! aggregation). Under the median and the trimmed mean, every coordinate of the global's
//! step stays within the honest clients' range and equals the statistic computed here; the
//! step's norm is at most the clip bound. Under the plain mean the same poison does move the
//! global far — showing the test would catch an aggregator that ignored the option.

mod common;

use common::*;
use tacit_rm::Head;

const CLIP: f64 = 1.0;

/// Runs one round of 4 honest + 1 poisoned update under `aggregator`; returns the step
/// (new global − old global) and the five clipped deltas, honest first.
fn round_with_poison(backend: Backend, aggregator: &str) -> Option<(Vec<f64>, Vec<Vec<f64>>)> {
    let db = database(backend, &format!("robust_{aggregator}"))?;
    let admin = token(&db.url, "admin", true);
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "5",
            "--round-seconds",
            "3600",
            "--aggregator",
            aggregator,
            "--trim-fraction",
            "0.2",
            "--clip-norm",
            &CLIP.to_string(),
            "--max-update-norm",
            "1000",
        ],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 21).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let mut deltas = Vec::new();
    for i in 0..5u64 {
        let values = if i < 4 {
            values(n, 500 + i, 0.02) // honest: norm ≈ 0.13, under the clip bound
        } else {
            vec![100.0; n] // poisoned: norm 640, clipped to 1 by the server, not refused
        };
        let t = token(&db.url, &format!("c{i}"), false);
        // The poisoner also claims a huge example count, to buy weight in a weighted mean.
        let n_examples = if i < 4 { 10 } else { 1_000_000 };
        let body = delta(&config, values.clone(), 1, n_examples)
            .to_bytes()
            .unwrap();
        assert_eq!(push(&server, &t, "m", &format!("k{i}"), body).status, 202);
        deltas.push(clip(&as_f64(&values), CLIP));
    }
    let served = pull(&server, &admin, "m");
    assert_eq!(served.version, 2, "the round closed");
    Some((step(&base, &served.head), deltas))
}

fn check_robust(backend: Backend, aggregator: &str, statistic: fn(&mut [f64]) -> f64) {
    let Some((step, deltas)) = round_with_poison(backend, aggregator) else {
        return;
    };
    let norm = step.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(norm <= CLIP + 1e-6, "the global moved by {norm} > {CLIP}");
    for (j, s) in step.iter().enumerate() {
        let mut column: Vec<f64> = deltas.iter().map(|d| d[j]).collect();
        let honest = &column[..4];
        let (lo, hi) = honest
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        assert!(
            *s >= lo - 1e-6 && *s <= hi + 1e-6,
            "coordinate {j}: {s} outside [{lo}, {hi}]"
        );
        let want = statistic(&mut column);
        assert!((s - want).abs() < 1e-6, "coordinate {j}: {s} vs {want}");
    }
}

fn median(column: &mut [f64]) -> f64 {
    column.sort_by(f64::total_cmp);
    column[column.len() / 2]
}

/// 20% of 5 = one value trimmed at each end.
fn trimmed_mean(column: &mut [f64]) -> f64 {
    column.sort_by(f64::total_cmp);
    column[1..4].iter().sum::<f64>() / 3.0
}

fn poisoned_client_under_median(backend: Backend) {
    check_robust(backend, "median", median);
}

fn poisoned_client_under_trimmed_mean(backend: Backend) {
    check_robust(backend, "trimmed-mean", trimmed_mean);
}

/// The control: FedAvg follows the poison (its claim of 10⁶ examples weighs the default cap
/// of 1000 against the honest clients' 4 × 10), up to the clip bound.
fn poisoned_client_moves_the_plain_mean(backend: Backend) {
    let Some((step, deltas)) = round_with_poison(backend, "mean") else {
        return;
    };
    let poison_direction = &deltas[4];
    let along: f64 = step.iter().zip(poison_direction).map(|(s, p)| s * p).sum();
    assert!(
        along > 0.9 * CLIP,
        "the mean moved only {along} toward the poison"
    );
}

on_both_backends!(
    poisoned_client_under_median,
    poisoned_client_under_trimmed_mean,
    poisoned_client_moves_the_plain_mean
);
