//! Sync deltas: difference, clip, apply and rebase against element-wise references, and the
//! wire form (round trip, metadata, refusal of NaN and missing keys).
#![cfg(not(target_arch = "wasm32"))]

use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::objective::ObjectiveKind;
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::delta::{self, Delta};

fn head(seed: u64) -> Head {
    Head::init(&HeadConfig::new(6, &[5]), seed).unwrap()
}

#[test]
fn difference_apply_and_rebase_match_elementwise_arithmetic() {
    let (base, local, newer) = (head(1), head(2), head(3));
    let d = delta::difference(&local, &base).unwrap();
    let (b, l, g) = (base.to_flat(), local.to_flat(), newer.to_flat());
    for i in 0..b.len() {
        assert_eq!(d[i], l[i] - b[i]);
    }
    let applied = delta::apply(&base, &d).unwrap().to_flat();
    for i in 0..b.len() {
        assert_eq!(applied[i], b[i] + (l[i] - b[i]));
    }
    let rebased = delta::rebase(&local, &base, &newer).unwrap().to_flat();
    for i in 0..b.len() {
        assert_eq!(rebased[i], g[i] + (l[i] - b[i]));
    }
    let other = Head::init(&HeadConfig::new(6, &[4]), 1).unwrap();
    assert_eq!(
        delta::difference(&other, &base)
            .unwrap_err()
            .code()
            .as_str(),
        "incompatible_weights"
    );
    assert_eq!(
        delta::apply(&base, &d[1..]).unwrap_err().code().as_str(),
        "dim_mismatch"
    );
}

#[test]
fn clip_scales_down_to_the_bound_and_never_up() {
    let mut v = vec![3.0f32, 4.0]; // norm 5
    assert_eq!(delta::clip(&mut v, 1.0).unwrap(), 5.0);
    assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    let mut small = vec![0.3f32, 0.4];
    delta::clip(&mut small, 1.0).unwrap();
    assert_eq!(small, vec![0.3, 0.4]);
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            delta::clip(&mut small, bad).unwrap_err().code().as_str(),
            "invalid_config"
        );
    }
}

fn sample() -> Delta {
    Delta {
        config: HeadConfig::new(6, &[5]),
        values: head(4).to_flat(),
        base_version: 17,
        n_examples: 321,
        objective: ObjectiveKind::parse("snips").unwrap(),
    }
}

#[test]
fn wire_form_round_trips_with_its_metadata() {
    let d = sample();
    let bytes = d.to_bytes().unwrap();
    assert_eq!(Delta::from_bytes(&bytes).unwrap(), d);
    // It is a tacit-rm weights file too: the store reads it, version = base version.
    let w = store::from_bytes(&bytes).unwrap();
    assert_eq!(w.version, 17);
    assert_eq!(w.head.to_flat(), d.values);
}

#[test]
fn wire_form_refusals_have_their_codes() {
    let d = sample();
    let bytes = d.to_bytes().unwrap();
    // NaN in the last value: non_finite_input (the server's 422), not corrupt_weights.
    let mut nan = bytes.clone();
    let n = nan.len();
    nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(
        Delta::from_bytes(&nan).unwrap_err().code().as_str(),
        "non_finite_input"
    );
    // A plain weights file has no base_version / n_examples.
    let plain = store::to_bytes(&Weights::new(head(4))).unwrap();
    assert_eq!(
        Delta::from_bytes(&plain).unwrap_err().code().as_str(),
        "corrupt_weights"
    );
    let zero = Delta {
        n_examples: 0,
        ..sample()
    };
    assert_eq!(
        Delta::from_bytes(&zero.to_bytes().unwrap())
            .unwrap_err()
            .code()
            .as_str(),
        "invalid_data"
    );
    for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
        assert_eq!(
            Delta::from_bytes(&bytes[..cut])
                .unwrap_err()
                .code()
                .as_str(),
            "corrupt_weights"
        );
    }
}

#[test]
fn extra_metadata_cannot_override_standard_keys() {
    let w = Weights::new(head(1));
    let err = store::to_bytes_with_metadata(&w, &[("dim", "99".into())]).unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_config");
}

#[path = "common/safetensors_edit.rs"]
mod safetensors_edit;

/// What a server aggregates must be exactly what the format defines: a tensor it does not
/// know, a metadata key written twice (a map-based reader keeps one silently) and counts in
/// a non-canonical spelling ("+5", "00010", " 5") are refused as corrupt.
#[test]
fn the_wire_form_is_read_strictly() {
    let bytes = sample().to_bytes().unwrap();
    assert_eq!(
        Delta::from_bytes(&bytes).unwrap(),
        sample(),
        "the edits start from a good file"
    );
    let corrupt = |b: Vec<u8>, what: &str| {
        let err = Delta::from_bytes(&b).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_weights", "{what}: {err}");
    };
    corrupt(
        safetensors_edit::with_extra_tensor(&bytes, "extra"),
        "extra tensor",
    );
    corrupt(
        safetensors_edit::duplicate_metadata(&bytes, "n_examples", "1000000000000"),
        "duplicate n_examples",
    );
    for count in ["+5", "00010", " 5", "5 ", "0x10", "1e3", ""] {
        corrupt(
            safetensors_edit::set_metadata(&bytes, "n_examples", count),
            &format!("n_examples {count:?}"),
        );
        corrupt(
            safetensors_edit::set_metadata(&bytes, "base_version", count),
            &format!("base_version {count:?}"),
        );
    }
    // The canonical spelling of another count is read as that count.
    let other =
        Delta::from_bytes(&safetensors_edit::set_metadata(&bytes, "n_examples", "10")).unwrap();
    assert_eq!(other.n_examples, 10);
}
