//! Safetensors round trips and hostile bytes.
#![cfg(not(target_arch = "wasm32"))]

use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::ObjectiveKind;
use tacit_rm::rng::Rng;
use tacit_rm::store::{self, Weights};

fn weights() -> Weights {
    let head = Head::init(
        &HeadConfig {
            dim: 12,
            hidden: vec![7, 3],
            activation: Activation::Tanh,
            outputs: 2,
        },
        5,
    )
    .unwrap();
    let exposure = Head::init(&HeadConfig::new(4, &[]), 6).unwrap();
    Weights {
        head,
        exposure_head: Some(exposure),
        objective: Some(ObjectiveKind::Beta),
        version: 42,
        personal: None,
    }
}

#[test]
fn round_trip_is_bit_exact_with_metadata() {
    let w = weights();
    let bytes = store::to_bytes(&w).unwrap();
    let back = store::from_bytes(&bytes).unwrap();
    assert_eq!(back, w);
    // Bit-exact, not merely equal as floats.
    for (a, b) in back.head.tensors().iter().zip(w.head.tensors()) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    let dir = std::env::temp_dir().join(format!("tacit-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    store::save(&path, &w).unwrap();
    assert_eq!(store::load(&path).unwrap(), w);
    assert!(
        !path.with_extension("safetensors.tmp").exists(),
        "no temporary file left behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_linear_head_round_trips_too() {
    let w = Weights::new(Head::init(&HeadConfig::new(384, &[]), 1).unwrap());
    assert_eq!(store::from_bytes(&store::to_bytes(&w).unwrap()).unwrap(), w);
}

#[test]
fn every_truncation_is_a_typed_error() {
    let bytes = store::to_bytes(&weights()).unwrap();
    for len in 0..bytes.len() {
        let err = store::from_bytes(&bytes[..len]).unwrap_err();
        assert!(
            matches!(
                err.code().as_str(),
                "corrupt_weights" | "incompatible_weights"
            ),
            "len {len}: {err}"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let bytes = store::to_bytes(&weights()).unwrap();
    let mut rng = Rng::new(1);
    let mut rejected = 0;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = rng.next_u64() as u8;
        }
        match store::from_bytes(&b) {
            Ok(w) => assert!(w.head.is_finite()),
            Err(e) => {
                rejected += 1;
                assert!(
                    matches!(
                        e.code().as_str(),
                        "corrupt_weights" | "incompatible_weights"
                    ),
                    "{e}"
                );
            }
        }
    }
    assert!(rejected > 0);
}

#[test]
fn mismatched_or_foreign_files_are_rejected() {
    let w = weights();
    let bytes = store::to_bytes(&w).unwrap();
    let other = HeadConfig::new(12, &[8]);
    assert_eq!(
        store::from_bytes_expecting(&bytes, &other)
            .unwrap_err()
            .code()
            .as_str(),
        "incompatible_weights"
    );
    assert_eq!(
        store::from_bytes_expecting(&bytes, &w.head.config).unwrap(),
        w
    );

    // A valid safetensors file that is not ours.
    let data = [0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    let foreign = safetensors::serialize([("x", view)], None).unwrap();
    assert_eq!(
        store::from_bytes(&foreign).unwrap_err().code().as_str(),
        "corrupt_weights"
    );

    // NaN weights are refused on save and on load.
    let mut bad = w.clone();
    bad.head.layers[0].weight[[0, 0]] = f32::NAN;
    assert_eq!(
        store::to_bytes(&bad).unwrap_err().code().as_str(),
        "non_finite_input"
    );
    let mut raw = bytes.clone();
    let nan = f32::NAN.to_le_bytes();
    let n = raw.len();
    raw[n - 4..].copy_from_slice(&nan); // last value of the last tensor
    assert_eq!(
        store::from_bytes(&raw).unwrap_err().code().as_str(),
        "corrupt_weights"
    );
}

#[test]
fn malicious_metadata_cannot_ask_for_huge_heads() {
    // Rewrite the header with an absurd width and check it is refused before allocation.
    let bytes = store::to_bytes(&Weights::new(
        Head::init(&HeadConfig::new(2, &[]), 1).unwrap(),
    ))
    .unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len])
        .unwrap()
        .to_string();
    let evil = header.replace("\"hidden\":\"[]\"", "\"hidden\":\"[1000000000]\"");
    assert_ne!(evil, header, "test must actually change the header");
    let mut out = (evil.len() as u64).to_le_bytes().to_vec();
    out.extend(evil.as_bytes());
    out.extend(&bytes[8 + header_len..]);
    assert_eq!(
        store::from_bytes(&out).unwrap_err().code().as_str(),
        "corrupt_weights"
    );
}

/// Equal weights serialise to equal bytes (the metadata's `HashMap` order would otherwise
/// change from one call to the next), and the canonical header still reads back.
#[test]
fn serialisation_is_deterministic() {
    let w = weights();
    let first = store::to_bytes(&w).unwrap();
    for _ in 0..20 {
        assert_eq!(store::to_bytes(&w).unwrap(), first);
    }
    let header_len = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&first[8..8 + header_len]).unwrap();
    let keys = [
        "activation",
        "dim",
        "exposure_dim",
        "format",
        "hidden",
        "objective",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| header.find(&format!("\"{k}\"")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "{header}");
    assert_eq!(store::from_bytes(&first).unwrap(), w);
}

/// `importWeights` with a version above 2^53 used to be accepted, and then `stats()` threw
/// (a JS number cannot hold it): the model refuses such weights and keeps its own.
#[test]
fn the_model_refuses_weights_whose_version_js_cannot_hold() {
    use tacit_rm::backend::Device;
    use tacit_rm::model::{ModelSpec, RewardModel};
    use tacit_rm::sync::protocol::MAX_VERSION;
    let spec = ModelSpec {
        dim: 4,
        hidden: vec![3],
        ..ModelSpec::default()
    };
    let mut model = RewardModel::new(&spec, Device::Cpu).unwrap();
    let mut w = model.weights().clone();
    for version in [MAX_VERSION + 1, u64::MAX] {
        w.version = version;
        let bytes = store::to_bytes(&w).unwrap();
        let err = model.import_weights(&bytes).unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_data", "{version}");
        assert_eq!(model.stats().version, 0);
        let err = model.replace_weights(w.clone()).unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_data");
    }
    w.version = MAX_VERSION;
    model.import_weights(&store::to_bytes(&w).unwrap()).unwrap();
    assert_eq!(model.stats().version, 9_007_199_254_740_991);
}

#[path = "common/safetensors_edit.rs"]
mod safetensors_edit;

/// A weights file holds exactly the tensors its metadata describes, each metadata key once,
/// integers spelled canonically.
#[test]
fn weights_are_read_strictly() {
    let bytes = store::to_bytes(&weights()).unwrap();
    assert_eq!(store::from_bytes(&bytes).unwrap(), weights());
    let corrupt = |b: Vec<u8>, what: &str| {
        let err = store::from_bytes(&b).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_weights", "{what}: {err}");
    };
    corrupt(
        safetensors_edit::with_extra_tensor(&bytes, "layers.9.weight"),
        "extra layer",
    );
    corrupt(
        safetensors_edit::with_extra_tensor(&bytes, "notes"),
        "foreign tensor",
    );
    corrupt(
        safetensors_edit::duplicate_metadata(&bytes, "version", "7"),
        "duplicate version",
    );
    corrupt(
        safetensors_edit::duplicate_metadata(&bytes, "dim", "12"),
        "duplicate with the same value",
    );
    for key in [
        "version",
        "dim",
        "outputs",
        "exposure_dim",
        "schema_version",
    ] {
        for spelling in ["+5", "007", " 5"] {
            corrupt(
                safetensors_edit::set_metadata(&bytes, key, spelling),
                &format!("{key} {spelling:?}"),
            );
        }
    }
    // A duplicate tensor entry in the header.
    let (header, data) = safetensors_edit::split(&bytes);
    let first = header.find("\"layers.0.bias\":").unwrap();
    let end = first + header[first..].find('}').unwrap() + 1;
    let entry = header[first..end].to_string();
    let dup = header.replacen(&entry, &format!("{entry},{entry}"), 1);
    corrupt(safetensors_edit::join(&dup, data), "duplicate tensor entry");
}
