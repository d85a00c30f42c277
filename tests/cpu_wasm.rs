//! The CPU path compiled to wasm, in node (wasm-bindgen-test-runner): every case of the
//! conformance suite (`conformance/cases.rs`) as `cpu_wasm::<case>`, and the forward and
//! backward passes on awkward shapes against the float64 reference. Built with
//! `RUSTFLAGS="-C target-feature=+simd128"` this runs the SIMD flavour's register-blocked
//! kernels (`gemm/src/lib.rs`), which no native build uses:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_DIR=target/simd128 \
//!   CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   cargo test --target wasm32-unknown-unknown --test cpu_wasm
//! ```
#![cfg(target_arch = "wasm32")]

mod common;
#[macro_use]
#[path = "conformance/cases.rs"]
mod cases;

use common::reference;
use tacit_rm::backend::cpu;
use tacit_rm::head::{Activation, Head, HeadConfig};
use wasm_bindgen_test::wasm_bindgen_test;

macro_rules! node_host {
    ($($case:ident),* $(,)?) => {
        mod cpu_wasm {
            use wasm_bindgen_test::wasm_bindgen_test;
            $(#[wasm_bindgen_test]
            async fn $case() {
                crate::cases::$case(&tacit_rm::backend::Device::Cpu).await;
            })*
        }
    };
}

conformance_cases!(node_host);

/// Rows that are not a multiple of the kernels' 4-row block (and 1, and 0), odd widths, a
/// two-output head, two hidden layers, a linear head, the head's own 384 → 128 → 1.
#[wasm_bindgen_test]
fn forward_and_backward_match_the_f64_reference_on_awkward_shapes() {
    for (n, dim, hidden, activation, outputs) in [
        (1000, 384, vec![128], Activation::Relu, 1),
        (13, 384, vec![128], Activation::Relu, 1),
        (1, 384, vec![128], Activation::Relu, 1),
        (0, 384, vec![128], Activation::Relu, 1),
        (7, 31, vec![9], Activation::Tanh, 2),
        (70, 17, vec![13, 5], Activation::Relu, 1),
        (5, 3, vec![], Activation::Relu, 1),
    ] {
        let cfg = HeadConfig {
            dim,
            hidden,
            activation,
            outputs,
        };
        let what = format!("{cfg:?} n={n}");
        let head = Head::init(&cfg, 9).unwrap();
        let x = common::random_matrix(n, dim, 10);
        let d_out = common::random_matrix(n, outputs, 11);

        let out = cpu::forward(&head, x.view()).unwrap();
        let want = reference::forward(&head, &x);
        assert_eq!(out.dim(), want.dim(), "{what}: output shape");
        let err = reference::worst_error(out.iter().map(|&v| v as f64), want.as_slice().unwrap());
        assert!(err <= 1e-5, "{what}: forward off by {err}");

        let (out_train, cache) = cpu::forward_train(&head, x.view());
        assert_eq!(out_train, out, "{what}: forward_train's outputs");
        let grads = cpu::backward(&head, &cache, d_out.view()).to_flat();
        let want = reference::backward(&head, &x, &d_out.mapv(|v| v as f64));
        assert_eq!(grads.len(), want.len(), "{what}: gradient length");
        let err = reference::worst_error(grads.iter().map(|&v| v as f64), &want);
        assert!(err <= 1e-5, "{what}: gradients off by {err}");
    }
}
