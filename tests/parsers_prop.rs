//! Property tests of the parsers of untrusted input, the same properties the fuzz targets
//! (`fuzz/`, `cargo xtask fuzz`) check with coverage guidance: a weights file, a delta and
//! an observation from anywhere are a typed error or a value that survives its own round
//! trip; never a panic.
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use tacit_rm::feedback::events::{exposure_features, Event, Observation, Shown};
use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::ObjectiveKind;
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::Delta;

fn weights_file() -> Vec<u8> {
    let config = HeadConfig {
        dim: 3,
        hidden: vec![2],
        activation: Activation::Tanh,
        outputs: 1,
    };
    store::to_bytes(&Weights {
        objective: Some(ObjectiveKind::Pairwise),
        version: 9,
        ..Weights::new(Head::init(&config, 3).unwrap())
    })
    .unwrap()
}

fn delta_file() -> Vec<u8> {
    let head = Head::init(&HeadConfig::new(3, &[2]), 4).unwrap();
    Delta {
        config: head.config.clone(),
        values: head.to_flat(),
        base_version: 5,
        n_examples: 40,
        objective: ObjectiveKind::Implicit,
    }
    .to_bytes()
    .unwrap()
}

/// A valid file with some bytes overwritten, then cut or extended: most mutations land in
/// the JSON header (where the parsing is) because it is most of a small file.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len();
    (
        proptest::collection::vec((0..n, any::<u8>()), 1..6),
        prop_oneof![Just(None), (0..n).prop_map(Some)],
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(move |(edits, cut, tail)| {
            let mut b = base.clone();
            for (i, v) in edits {
                b[i] = v;
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            b.extend(tail);
            b
        })
}

const CODES: [&str; 4] = [
    "corrupt_weights",
    "incompatible_weights",
    "non_finite_input",
    "invalid_data",
];

proptest! {
    // No failure files: a failing case is printed, and the suite writes nothing to the tree.
    // A fixed seed: the suite is deterministic (the fuzz targets are what explores).
    #![proptest_config(ProptestConfig {
        cases: 4000,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0007_ac17),
        ..ProptestConfig::default()
    })]

    #[test]
    fn weights_parse_or_refuse_with_a_code(bytes in mutated(weights_file())) {
        match store::from_bytes(&bytes) {
            Ok(w) => {
                let again = store::to_bytes(&w).unwrap();
                prop_assert_eq!(store::from_bytes(&again).unwrap(), w);
            }
            Err(e) => prop_assert!(CODES.contains(&e.code().as_str()), "{}", e),
        }
    }

    #[test]
    fn deltas_parse_or_refuse_with_a_code(bytes in mutated(delta_file())) {
        match Delta::from_bytes(&bytes) {
            Ok(d) => {
                prop_assert!(d.n_examples > 0 && d.values.iter().all(|v| v.is_finite()));
                prop_assert_eq!(Delta::from_bytes(&d.to_bytes().unwrap()).unwrap(), d);
            }
            Err(e) => prop_assert!(CODES.contains(&e.code().as_str()), "{}", e),
        }
    }

    /// A count is read only in the spelling `u64`'s `Display` writes.
    #[test]
    fn counts_are_read_in_their_one_spelling(text in "[-+ 0-9a-f]{0,21}", n in any::<u64>()) {
        let canonical = text.parse::<u64>().ok().filter(|v| v.to_string() == text);
        prop_assert_eq!(store::parse_count(&text), canonical);
        prop_assert_eq!(store::parse_count(&n.to_string()), Some(n));
    }

    /// Whatever numbers an app passes, an observation that validates has finite exposure
    /// features (one that does not would wedge every later training call), and JSON
    /// round-trips it.
    #[test]
    fn a_valid_observation_has_finite_features(
        embedding in proptest::collection::vec(any::<f32>(), 3..6),
        position in any::<u32>(),
        candidates in any::<u32>(),
        dwell_ms in any::<f64>(),
        length in any::<f64>(),
        propensity in proptest::option::of(any::<f32>()),
        events in proptest::collection::vec(0usize..5, 0..3),
    ) {
        let obs = Observation {
            seq: 0,
            id: "a".into(),
            turn: None,
            embedding,
            shown: Shown { position, candidates },
            events: events.into_iter().map(|i| Event::parse(Event::NAMES[i]).unwrap()).collect(),
            dwell_ms,
            length,
            propensity,
        };
        match obs.validate(4) {
            Ok(()) => {
                let f = exposure_features(&obs).unwrap();
                prop_assert!(f.iter().all(|v| v.is_finite()), "{:?} from {:?}", f, obs);
                prop_assert!(obs.embedding.len() == 4 && obs.embedding.iter().all(|v| v.is_finite()));
                // Through JSON (the stored log's form) everything comes back, the f64 fields
                // within a few ulps: serde_json's default float parser is best-effort (this
                // property found 2 ulps); its exact one, `float_roundtrip`, costs the shipped
                // wasm ~60 KB, and a few ulps of a dwell time or a length move no f32 feature.
                let json = serde_json::to_string(&obs).unwrap();
                let back = serde_json::from_str::<Observation>(&json).unwrap();
                let near = |a: f64, b: f64| {
                    a == b || (a.signum() == b.signum() && a.to_bits().abs_diff(b.to_bits()) <= 8)
                };
                prop_assert!(
                    near(back.dwell_ms, obs.dwell_ms) && near(back.length, obs.length),
                    "{} came back as {:?}, {:?}", json, back.dwell_ms, back.length
                );
                prop_assert_eq!(exposure_features(&back).unwrap(), f);
                prop_assert_eq!(
                    Observation { dwell_ms: obs.dwell_ms, length: obs.length, ..back },
                    obs
                );
            }
            Err(e) => prop_assert!(
                ["invalid_data", "non_finite_input", "dim_mismatch"].contains(&e.code().as_str()),
                "{}", e
            ),
        }
    }
}

/// The seed corpus of each fuzz target (`fuzz/corpus/<target>/`) is what this build writes:
/// a format change that left the seeds behind would have the fuzzer start from files the
/// parsers refuse at the first check. `TACIT_BLESS=1` rewrites them.
#[test]
fn the_fuzz_seed_corpus_is_what_this_build_writes() {
    use tacit_rm::model::{ModelSpec, RewardModel};
    use tacit_rm::personal::Personalization;
    let basis = RewardModel::new(
        &ModelSpec {
            dim: 3,
            hidden: vec![2],
            objective: ObjectiveKind::Pairwise,
            personalization: Personalization::Basis,
            ..ModelSpec::default()
        },
        tacit_rm::backend::Device::Cpu,
    )
    .unwrap();
    let with_exposure = Weights {
        exposure_head: Some(Head::init(&HeadConfig::new(4, &[]), 2).unwrap()),
        objective: Some(ObjectiveKind::Implicit),
        ..Weights::new(Head::init(&HeadConfig::new(3, &[]), 1).unwrap())
    };
    let observation = Observation {
        seq: 0,
        id: "answer-1".into(),
        turn: Some("turn-1".into()),
        embedding: vec![0.5, -1.0, 0.25, 2.0],
        shown: Shown {
            position: 1,
            candidates: 4,
        },
        events: vec![Event::Copy, Event::ThumbsUp],
        dwell_ms: 5400.0,
        length: 812.0,
        propensity: Some(0.5),
    };
    // The update target's server holds a 4→3→1 model at version 1 (`fuzz/fuzz_targets/update.rs`);
    // its first byte picks the idempotency key.
    let head = Head::init(&HeadConfig::new(4, &[3]), 7).unwrap();
    let push = Delta {
        config: head.config.clone(),
        values: head.to_flat().iter().map(|v| v * 0.01).collect(),
        base_version: 1,
        n_examples: 20,
        objective: ObjectiveKind::Implicit,
    };
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("weights", "mlp", weights_file()),
        (
            "weights",
            "basis",
            store::to_bytes(basis.weights()).unwrap(),
        ),
        (
            "weights",
            "exposure",
            store::to_bytes(&with_exposure).unwrap(),
        ),
        ("delta", "delta", delta_file()),
        (
            "observation",
            "observation.json",
            serde_json::to_vec(&observation).unwrap(),
        ),
        (
            "update",
            "push",
            [vec![0u8], push.to_bytes().unwrap()].concat(),
        ),
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let bless = std::env::var_os("TACIT_BLESS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in seeds {
        let path = root.join(target).join(name);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(format!("{target}/{name}"));
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz/corpus is behind this build for {stale:?}: rerun this test with TACIT_BLESS=1"
    );
}
