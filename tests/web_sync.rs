#![cfg(target_arch = "wasm32")]
//! The browser half of the sync tests, in headless Chromium (wasm-bindgen-test-runner): the
//! scenarios of `tests/sync_scenario` run on the browser's executor (the same pass the native
//! tests run), and the package's `importWeights` refusals: a version JS cannot hold, and an
//! import while `train` runs.

mod sync_scenario;

use js_sys::{Promise, Uint8Array};
use tacit_rm::store;
use tacit_rm::sync::protocol::MAX_VERSION;
use tacit_rm::web::RewardModel;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn a_retry_accepted_then_the_pull_happens() {
    sync_scenario::a_retry_accepted_then_the_pull_happens().await;
}

#[wasm_bindgen_test]
async fn a_push_to_a_missing_model_stays_queued() {
    sync_scenario::a_push_to_a_missing_model_stays_queued().await;
}

#[wasm_bindgen_test]
async fn a_secure_model_never_gets_a_plain_delta() {
    sync_scenario::a_secure_model_never_gets_a_plain_delta().await;
}

#[wasm_bindgen_test]
async fn no_answer_on_the_aggregation_mode_sends_nothing() {
    sync_scenario::no_answer_on_the_aggregation_mode_sends_nothing().await;
}

fn obj(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

fn code(err: &JsValue) -> String {
    js_sys::Reflect::get(err, &"code".into())
        .ok()
        .and_then(|c| c.as_string())
        .unwrap_or_else(|| format!("{err:?}"))
}

async fn settle(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

async fn small_model() -> RewardModel {
    RewardModel::open(obj(
        r#"{"persist": false, "backend": "cpu", "dim": 4, "hidden": [3]}"#,
    ))
    .await
    .unwrap()
}

fn stats_version(rm: &RewardModel) -> f64 {
    let stats = rm.stats().expect("stats() does not throw");
    js_sys::Reflect::get(&stats, &"version".into())
        .unwrap()
        .as_f64()
        .unwrap()
}

#[wasm_bindgen_test]
async fn import_weights_refuses_a_version_above_2_pow_53_and_stats_still_work() {
    let rm = small_model().await;
    let mut w = store::from_bytes(&rm.export_weights().unwrap().to_vec()).unwrap();
    w.version = MAX_VERSION + 1;
    let bytes = Uint8Array::from(&store::to_bytes(&w).unwrap()[..]);
    let err = settle(rm.import_weights(bytes.into())).await.unwrap_err();
    assert_eq!(code(&err), "invalid_data");
    assert_eq!(stats_version(&rm), 0.0);
    // The largest exact one is accepted and reported exactly.
    w.version = MAX_VERSION;
    let bytes = Uint8Array::from(&store::to_bytes(&w).unwrap()[..]);
    settle(rm.import_weights(bytes.into())).await.unwrap();
    assert_eq!(stats_version(&rm), 9_007_199_254_740_991.0);
}

#[wasm_bindgen_test]
async fn import_weights_during_train_is_refused_as_busy() {
    let rm = small_model().await;
    for i in 0..12 {
        let o = obj(&format!(
            r#"{{"id": "a{i}", "embedding": [{}, 0.5, -0.25, 1], "shown": {{"position": {}, "candidates": 2}}, "events": {}}}"#,
            i as f32 / 12.0,
            i % 2,
            if i % 3 == 0 { r#"["copy"]"# } else { "[]" }
        ));
        settle(rm.observe(o)).await.unwrap();
    }
    let exported = rm.export_weights().unwrap();
    let train = rm.train(obj(r#"{"epochs": 5, "validationFraction": 0}"#));
    let import = rm.import_weights(exported.into());
    let err = settle(import).await.unwrap_err();
    assert_eq!(code(&err), "busy");
    let result = settle(train).await.unwrap();
    let examples = js_sys::Reflect::get(&result, &"examples".into())
        .unwrap()
        .as_f64();
    assert_eq!(examples, Some(12.0));
    // Once training is over, importing is allowed again.
    let again = rm.export_weights().unwrap();
    settle(rm.import_weights(again.into())).await.unwrap();
}
