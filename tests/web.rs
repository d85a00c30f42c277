//! The browser tests, in headless Chromium (wasm-bindgen-test-runner): every case of the
//! conformance suite (`conformance/cases.rs`) on browser WebGPU as `webgpu::<case>`, then
//! the package's JS API on both backends: the probe, scores, training, IndexedDB restore,
//! error codes.
//!
//! WebGPU must be present: Chromium started with `--enable-unsafe-webgpu` (`webdriver.json`)
//! gives SwiftShader. Without an adapter the WebGPU tests fail; they never pass silently.
#![cfg(target_arch = "wasm32")]

mod common;
#[macro_use]
#[path = "conformance/cases.rs"]
mod cases;

use std::sync::Arc;

use js_sys::{Float32Array, Promise, Uint8Array};
use tacit_rm::backend::gpu::GpuContext;
use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::web::RewardModel;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A WebGPU context of its own for one test; no adapter is a failure.
async fn gpu() -> Arc<GpuContext> {
    match GpuContext::new().await {
        // The wasm32 build is single-threaded; wgpu's WebGPU handles are not Send there.
        #[allow(clippy::arc_with_non_send_sync)]
        Ok(ctx) => Arc::new(ctx),
        Err(e) => panic!("no WebGPU adapter: the webgpu:: tests need one: {e}"),
    }
}

macro_rules! browser_host {
    ($($case:ident),* $(,)?) => {
        mod webgpu {
            use wasm_bindgen_test::wasm_bindgen_test;
            $(#[wasm_bindgen_test]
            async fn $case() {
                crate::cases::$case(&tacit_rm::backend::Device::Gpu(crate::gpu().await)).await;
            })*
        }
    };
}

conformance_cases!(browser_host);

fn web_sys_log(msg: &str) {
    wasm_bindgen_test::console_log!("{msg}");
}

fn obj(json: &str) -> JsValue {
    js_sys::JSON::parse(json).expect("test JSON")
}

async fn resolve(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

fn code(err: &JsValue) -> String {
    assert_eq!(
        js_sys::Reflect::get(err, &"name".into())
            .unwrap()
            .as_string()
            .as_deref(),
        Some("TacitError"),
        "{err:?}"
    );
    js_sys::Reflect::get(err, &"code".into())
        .unwrap()
        .as_string()
        .unwrap_or_default()
}

fn floats(v: &[f32]) -> JsValue {
    Float32Array::from(v).into()
}

fn to_vec(v: JsValue) -> Vec<f32> {
    v.dyn_into::<Float32Array>().expect("Float32Array").to_vec()
}

#[wasm_bindgen_test]
async fn the_probe_picks_webgpu_when_the_browser_has_it() {
    let ctx = gpu().await;
    web_sys_log(&format!("WebGPU adapter: {ctx:?}"));
    let rm = RewardModel::open(obj(r#"{"persist": false, "dim": 8, "hidden": [4]}"#))
        .await
        .unwrap();
    assert_eq!(rm.backend().unwrap(), "webgpu");
    let cpu = RewardModel::open(obj(r#"{"persist": false, "backend": "cpu", "dim": 8}"#))
        .await
        .unwrap();
    assert_eq!(cpu.backend().unwrap(), "cpu");
}

/// `auto` places each scoring call (DESIGN §11): `stats().lastScore` says where and why. A
/// software adapter (the headless browser's SwiftShader) serves no scoring call; a hardware
/// one serves the calls above its measured crossover. A forced `webgpu` serves every call
/// on the GPU. The numbers are the conformance suite's concern; here, the reporting.
#[wasm_bindgen_test]
async fn auto_places_each_scoring_call_and_says_why() {
    let ctx = gpu().await;
    let field = |v: &JsValue, k: &str| js_sys::Reflect::get(v, &k.into()).unwrap();
    let open = |backend: &str| {
        RewardModel::open(obj(&format!(
            r#"{{"persist": false, "backend": "{backend}", "dim": 384, "hidden": [128]}}"#
        )))
    };
    let auto = open("auto").await.unwrap();
    assert!(field(&auto.stats().unwrap(), "lastScore").is_null());
    let four = vec![0.01f32; 4 * 384];
    resolve(auto.score(floats(&four), JsValue::UNDEFINED))
        .await
        .unwrap();
    let last = field(&auto.stats().unwrap(), "lastScore");
    let reason = field(&last, "reason").as_string().unwrap();
    web_sys_log(&format!(
        "auto on {ctx:?} (software: {}): 4 rows served {last:?}",
        ctx.is_software()
    ));
    assert_eq!(field(&last, "rows").as_f64(), Some(4.0));
    if ctx.is_software() {
        assert_eq!(reason, "software-adapter");
        assert_eq!(field(&last, "device").as_string().unwrap(), "cpu");
    } else {
        assert!(
            ["small-batch", "large-batch"].contains(&reason.as_str()),
            "{reason}"
        );
    }
    let forced = open("webgpu").await.unwrap();
    resolve(forced.score(floats(&four), JsValue::UNDEFINED))
        .await
        .unwrap();
    let last = field(&forced.stats().unwrap(), "lastScore");
    assert_eq!(field(&last, "device").as_string().unwrap(), "webgpu");
    assert_eq!(field(&last, "reason").as_string().unwrap(), "only-device");
}

/// The JS API on one backend: scores, rank, observe/train, and every bad input refused with
/// its code while the model stays usable.
async fn api_on(backend: &str) {
    let open = |extra: &str| {
        obj(&format!(
            r#"{{"persist": false, "backend": "{backend}", "dim": 16, "hidden": [8], "seed": 5{extra}}}"#
        ))
    };
    let rm = RewardModel::open(open("")).await.unwrap();
    assert_eq!(rm.backend().unwrap(), backend);
    let x = common::random_matrix(5, 16, 1);
    let flat = x.as_slice().unwrap();
    let scores = to_vec(
        resolve(rm.score(floats(flat), JsValue::UNDEFINED))
            .await
            .unwrap(),
    );
    let head = Head::init(&HeadConfig::new(16, &[8]), 5).unwrap();
    let reference = common::reference::scores(&head, &x);
    for (g, r) in scores.iter().zip(&reference) {
        assert!(common::close(*g, *r as f32, 1e-5), "{backend}: {g} vs {r}");
    }
    let order = resolve(rm.rank(floats(flat), JsValue::UNDEFINED))
        .await
        .unwrap();
    let order = order.dyn_into::<js_sys::Uint32Array>().unwrap().to_vec();
    assert!(order
        .windows(2)
        .all(|w| scores[w[0] as usize] >= scores[w[1] as usize]));

    // Bad input: each a rejected promise with its code.
    let bad = [
        (
            rm.score(floats(&flat[..15]), JsValue::UNDEFINED),
            "dim_mismatch",
        ),
        (
            rm.score(floats(&[f32::NAN; 16]), JsValue::UNDEFINED),
            "non_finite_input",
        ),
        (rm.score(floats(&[]), JsValue::UNDEFINED), "empty_input"),
        (
            rm.import_weights(Uint8Array::from(&b"{\"oops\"}"[..]).into()),
            "corrupt_weights",
        ),
        (
            rm.train(obj(r#"{"epochs": 2, "learningRat": 0.1}"#)),
            "unknown_option",
        ),
        (rm.train(JsValue::UNDEFINED), "empty_input"),
        (
            rm.observe(obj(
                r#"{"id": "a", "embedding": [1], "shown": {"position": 0, "candidates": 1}}"#,
            )),
            "dim_mismatch",
        ),
        (
            rm.observe(obj(
                r#"{"id": "a", "shown": {"position": 0, "candidates": 1}}"#,
            )),
            "invalid_data",
        ),
    ];
    for (p, want) in bad {
        let err = resolve(p).await.expect_err(want);
        assert_eq!(code(&err), want, "{backend}: {err:?}");
    }
    let err = RewardModel::open(open(r#", "dimm": 3"#))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), "unknown_option");
    // Truncated real weights are corrupt too.
    let good = rm.export_weights().unwrap().to_vec();
    let err = resolve(rm.import_weights(Uint8Array::from(&good[..good.len() - 9]).into()))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "corrupt_weights");
    // Still usable, with the same weights.
    let again = to_vec(
        resolve(rm.score(floats(flat), JsValue::UNDEFINED))
            .await
            .unwrap(),
    );
    assert_eq!(again, scores);
    assert_eq!(rm.export_weights().unwrap().to_vec(), good);

    // Feedback and training.
    for i in 0..40u32 {
        let emb: Vec<f32> = (0..16)
            .map(|j| ((i * 7 + j) % 5) as f32 * 0.2 - 0.4)
            .collect();
        let liked = i % 4 == 0;
        let o = obj(&format!(
            r#"{{"id": "a{i}", "turn": "t{}", "embedding": {:?}, "shown": {{"position": {}, "candidates": 2}}, "events": {}, "dwellMs": {}}}"#,
            i / 2,
            emb,
            i % 2,
            if liked {
                r#"["copy"]"#
            } else if i % 4 == 1 {
                r#"["thumbs_down"]"#
            } else {
                "[]"
            },
            1000 + 100 * i
        ));
        resolve(rm.observe(o)).await.unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, f64)>::new()));
    let counter = seen.clone();
    let cb = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |p: JsValue| {
        let get = |k: &str| js_sys::Reflect::get(&p, &k.into()).unwrap();
        assert!(get("trainLoss").as_f64().is_some());
        let part = get("part").as_string().unwrap();
        counter
            .lock()
            .unwrap()
            .push((part, get("fraction").as_f64().unwrap()));
    });
    let opts = obj(r#"{"epochs": 3, "objective": "implicit", "validationFraction": 0}"#);
    js_sys::Reflect::set(&opts, &"onProgress".into(), cb.as_ref()).unwrap();
    let result = resolve(rm.train(opts)).await.unwrap();
    // The default personal part trains first (one run: no held-out turns to choose a blend
    // on), then the shared head; one progress bar over both.
    let seen = seen.lock().unwrap().clone();
    let parts: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        parts,
        ["personal", "personal", "personal", "shared", "shared", "shared"]
    );
    let fractions: Vec<f64> = seen.iter().map(|(_, f)| *f).collect();
    assert!(fractions.windows(2).all(|w| w[1] > w[0]), "{fractions:?}");
    assert!((fractions[5] - 1.0).abs() < 1e-12, "{fractions:?}");
    let examples = js_sys::Reflect::get(&result, &"examples".into()).unwrap();
    assert_eq!(examples.as_f64(), Some(40.0));
    let stats = rm.stats().unwrap();
    let pending = js_sys::Reflect::get(&stats, &"pending".into()).unwrap();
    assert_eq!(pending.as_f64(), Some(0.0));
    let trained = to_vec(
        resolve(rm.score(floats(flat), JsValue::UNDEFINED))
            .await
            .unwrap(),
    );
    assert_ne!(trained, scores, "training changed nothing");
    resolve(rm.close()).await.unwrap();
    let err = resolve(rm.score(floats(flat), JsValue::UNDEFINED))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "closed");
}

#[wasm_bindgen_test]
async fn the_js_api_on_the_cpu_path() {
    api_on("cpu").await;
}

#[wasm_bindgen_test]
async fn the_js_api_on_webgpu() {
    gpu().await;
    api_on("webgpu").await;
    let err = RewardModel::open(obj(r#"{"persist": false, "backend": "gpu"}"#))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), "invalid_config");
}

/// Closing and opening the same name (what a reload does) restores the weights bit for bit
/// and every acknowledged observation not yet trained on.
#[wasm_bindgen_test]
async fn indexeddb_restores_weights_and_pending_observations() {
    let name = format!("restore-{}", js_sys::Date::now());
    let open = || {
        obj(&format!(
            r#"{{"name": "{name}", "backend": "cpu", "dim": 16, "hidden": [8]}}"#
        ))
    };
    let rm = RewardModel::open(open()).await.unwrap();
    assert!(rm.persistent());
    let observe = |rm: &RewardModel, i: u32| {
        let emb: Vec<f32> = (0..16).map(|j| ((i + j) % 3) as f32 - 1.0).collect();
        rm.observe(obj(&format!(
            r#"{{"id": "a{i}", "turn": "t{}", "embedding": {emb:?}, "shown": {{"position": {}, "candidates": 2}}, "events": {}}}"#,
            i / 2,
            i % 2,
            if i % 3 == 0 { r#"["thumbs_up"]"# } else { "[]" }
        )))
    };
    for i in 0..12 {
        resolve(observe(&rm, i)).await.unwrap();
    }
    resolve(rm.train(obj(r#"{"epochs": 2, "objective": "implicit"}"#)))
        .await
        .unwrap();
    for i in 12..15 {
        resolve(observe(&rm, i)).await.unwrap();
    }
    let weights = rm.export_weights().unwrap().to_vec();
    let before = rm.stats().unwrap();
    resolve(rm.close()).await.unwrap();

    let back = RewardModel::open(open()).await.unwrap();
    assert_eq!(back.export_weights().unwrap().to_vec(), weights);
    let stats = back.stats().unwrap();
    let pending = js_sys::Reflect::get(&stats, &"pending".into()).unwrap();
    assert_eq!(pending.as_f64(), Some(3.0));
    // The training history is stored with the weights: stats() says after the reload what it
    // said before (12 trained, the last call's loss and sample size), not 0 and null.
    let get = |v: &JsValue, k: &str| js_sys::Reflect::get(v, &k.into()).unwrap().as_f64();
    assert_eq!(get(&stats, "trainedExamples"), Some(12.0));
    for key in ["trainedExamples", "lastLoss", "effectiveSampleSize"] {
        assert!(get(&before, key).is_some(), "{key} before the reload");
        assert_eq!(
            get(&stats, key),
            get(&before, key),
            "{key} after the reload"
        );
    }
    // Opening with another head shape is refused, not silently reinitialised.
    let err = RewardModel::open(obj(&format!(r#"{{"name": "{name}", "dim": 32}}"#)))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), "incompatible_weights");
    resolve(back.close()).await.unwrap();
    resolve(RewardModel::delete_stored(name.clone()))
        .await
        .unwrap();
    let fresh = RewardModel::open(open()).await.unwrap();
    assert_ne!(fresh.export_weights().unwrap().to_vec(), weights);
}

/// Observations made while a training call runs stay pending after it; a second training
/// call meanwhile is refused with `busy`.
#[wasm_bindgen_test]
async fn observations_during_training_stay_pending() {
    let rm = RewardModel::open(obj(
        r#"{"persist": false, "backend": "cpu", "dim": 4, "hidden": []}"#,
    ))
    .await
    .unwrap();
    let observe = |i: u32| {
        rm.observe(obj(&format!(
            r#"{{"id": "a{i}", "embedding": [{}, 1, 0, -1], "shown": {{"position": 0, "candidates": 1}}, "events": {}}}"#,
            i % 3,
            if i % 2 == 0 { r#"["copy"]"# } else { "[]" }
        )))
    };
    for i in 0..20 {
        resolve(observe(i)).await.unwrap();
    }
    let training = rm.train(obj(r#"{"epochs": 3, "objective": "naive"}"#));
    let during = observe(99);
    let second = rm.train(JsValue::UNDEFINED);
    assert_eq!(code(&resolve(second).await.unwrap_err()), "busy");
    resolve(during).await.unwrap();
    resolve(training).await.unwrap();
    let stats = rm.stats().unwrap();
    let pending = js_sys::Reflect::get(&stats, &"pending".into()).unwrap();
    assert_eq!(pending.as_f64(), Some(1.0));
}
