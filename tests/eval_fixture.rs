//! `tacit eval` on the real dev fixture under the confounded protocol: the best debiased
//! method must beat `naive` by a margin well outside the seed-to-seed spread.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use tacit_rm::data::Dataset;
use tacit_rm::eval::{self, EvalConfig, Method};
use tacit_rm::sim::{Protocol, SimConfig};

#[test]
fn debiasing_beats_naive_under_confounded_feedback() {
    let ds = Dataset::load(&common::fixture()).unwrap();
    let seeds = 6;
    let cfg = EvalConfig {
        sim: SimConfig {
            protocol: Protocol::Confounded,
            ..SimConfig::default()
        },
        seeds,
        methods: Method::parse_list("naive,ips,noise-ips,dr,pairwise,oracle").unwrap(),
        ..EvalConfig::default()
    };
    let result = eval::run(&ds, &cfg, &mut |_, _, _| {}).unwrap();
    let naive = result.method("naive").unwrap();
    let (best_name, best) = ["ips", "noise-ips", "dr", "pairwise"]
        .iter()
        .map(|&m| (m, result.method(m).unwrap()))
        .max_by(|a, b| a.1.auroc.mean.total_cmp(&b.1.auroc.mean))
        .unwrap();
    let gain = best.auroc_gain_vs_naive.unwrap();
    let spread = naive.auroc.std.max(best.auroc.std);
    // Well outside the spread: the mean gain exceeds three seed-to-seed standard deviations
    // of either method, and the paired per-seed gain is positive on every seed.
    assert!(
        gain.mean > 3.0 * spread,
        "{best_name}: gain {:.3} vs spread {spread:.3}",
        gain.mean
    );
    let naive_runs = &naive.per_seed;
    assert!(
        best.per_seed
            .iter()
            .zip(naive_runs)
            .all(|(b, n)| b.auroc > n.auroc),
        "{best_name} must win on every seed"
    );
    // And the table it prints carries the numbers.
    let table = result.markdown();
    assert!(table.contains("| naive |") && table.contains(&format!("| {best_name} |")));
    let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    for m in ["naive", "oracle"] {
        for metric in ["auroc", "pair_acc", "mae", "r2", "pearson", "nll"] {
            assert!(
                json["methods"][m][metric]["mean"].is_number(),
                "{m}.{metric}"
            );
            assert!(
                json["methods"][m][metric]["std"].is_number(),
                "{m}.{metric}"
            );
        }
    }
    assert_eq!(json["config"]["sim"]["protocol"], "confounded");
}
