//! `rm.sync(options)` in the browser: its options and result, and the browser's ports of the
//! one sync pass (`crate::sync::pass`): `fetch` as the transport, `Date.now` and `setTimeout`
//! as the clock. The state is kept in IndexedDB by `storage.rs`, so that an update made offline
//! is pushed later, and never twice: a queued push keeps its key through every retry and every
//! reload.

use js_sys::{Promise, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::error::describe;
use crate::error::{Error, Result};
use crate::sync::pass::PrivacyStatus;
use crate::sync::secagg::session::{SecureOutcome, SessionOptions};
use crate::sync::{Clock, HttpRequest, HttpResponse, SyncConfig, SyncReport, Transport};

/// `sync(options)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncOptions {
    /// The server's base URL, e.g. `https://example.org/tacit` (no trailing path needed).
    pub url: String,
    /// A client token from `tacit-server token create`.
    pub token: String,
    /// The model's name on the server (default: the local model's name).
    #[serde(default)]
    pub model: Option<String>,
    /// L2 bound of a pushed delta (keep it at or under the server's bound). Default 10.
    #[serde(default)]
    pub clip_norm: Option<f64>,
    /// Per-request timeout. Default 15 000 ms.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// How long one call may wait to retry a failed push before leaving it queued.
    /// Default 3 000 ms.
    #[serde(default)]
    pub retry_budget_ms: Option<u32>,
    /// On a model the server aggregates securely: how long one call waits for the round to
    /// end before leaving it (a dropout: the update stays queued and the next call learns
    /// whether the round counted it). Default 60 000 ms, at most [`MAX_ROUND_WAIT_MS`].
    #[serde(default)]
    pub round_wait_ms: Option<u32>,
}

/// The longest `roundWaitMs`: an hour (a page rarely lives through more of a round).
pub const MAX_ROUND_WAIT_MS: u32 = 3_600_000;
/// How often a call waiting in a secure round asks the server how far it is.
const ROUND_POLL_MS: u64 = 250;

impl SyncOptions {
    pub fn config(&self, local_name: &str) -> Result<SyncConfig> {
        if self.url.is_empty() {
            return Err(Error::InvalidConfig("sync needs the server's url".into()));
        }
        let mut c = SyncConfig::new(self.model.as_deref().unwrap_or(local_name), &self.token);
        if let Some(n) = self.clip_norm {
            c.clip_norm = n;
        }
        if self.round_wait_ms.is_some_and(|ms| ms > MAX_ROUND_WAIT_MS) {
            return Err(Error::InvalidConfig(format!(
                "roundWaitMs must be at most {MAX_ROUND_WAIT_MS} (an hour)"
            )));
        }
        Ok(c)
    }

    /// How the call waits in a secure round.
    pub fn session(&self) -> SessionOptions {
        SessionOptions {
            poll_ms: ROUND_POLL_MS,
            give_up_ms: u64::from(self.round_wait_ms.unwrap_or(60_000)),
        }
    }
}

/// What `sync` resolves to.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    /// The global version the local weights now build on.
    pub version: u64,
    /// Updates the server accepted during this call.
    pub pushed: usize,
    /// A newer global was pulled and the local weights rebased onto it.
    pub pulled: bool,
    /// Updates still queued (offline, or waiting to retry).
    pub queued: usize,
    /// The server could not be reached; what was queued stays queued for the next call.
    pub offline: bool,
    /// Why the server counts as unreachable (no answer, or a refusal it can outlive: 404 before
    /// the model exists, 429, 5xx); `null` when it answered.
    pub reason: Option<String>,
    /// Bytes of request bodies this call handed to `fetch` (the pushed shared-part deltas, or
    /// a secure round's messages; never an observation, an embedding or the personal part).
    pub sent_bytes: u64,
    /// Whether this call sent the update masked (a secure round's input): only on a model
    /// the server aggregates securely; a plain push is a clipped delta the server can read.
    /// DP noise, where the server applies it, is added to the aggregate, not on the device.
    pub masked: bool,
    /// The secure round this call took part in or learned the outcome of; `null` on a model
    /// aggregated in plain mode, or with nothing to send.
    pub secure_round: Option<SecureRoundResult>,
    /// What the server says the model has spent under differential privacy; `null` when it
    /// was not asked (offline) or did not answer.
    pub privacy: Option<PrivacyResult>,
}

/// `SyncResult.secureRound`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureRoundResult {
    pub round: u64,
    /// `counted`, `not_counted`, `busy` or `left`.
    pub outcome: &'static str,
    /// Why a `not_counted` round did not count this model's updates.
    pub reason: Option<String>,
}

impl SecureRoundResult {
    fn of(outcome: &SecureOutcome) -> Option<Self> {
        let (round, outcome, reason) = match outcome {
            SecureOutcome::Nothing => return None,
            SecureOutcome::Counted { round, .. } => (*round, "counted", None),
            SecureOutcome::NotCounted { round, reason } => {
                (*round, "not_counted", Some(reason.clone()))
            }
            SecureOutcome::Busy { round } => (*round, "busy", None),
            SecureOutcome::Left { round } => (*round, "left", None),
        };
        Some(SecureRoundResult {
            round,
            outcome,
            reason,
        })
    }
}

/// `SyncResult.privacy`: `{ dp: false }`, or the spent (ε, δ) and what it was spent with.
/// (Two plain structs rather than a flattened option: the package serialises structs as
/// plain objects, maps as `Map`s.)
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PrivacyResult {
    Off { dp: bool },
    On(PrivacySpent),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivacySpent {
    /// Always `true`.
    pub dp: bool,
    pub epsilon: f64,
    pub delta: f64,
    pub rounds: u64,
    pub noise_multiplier: f64,
    pub sampling_rate: f64,
    pub budget_epsilon: f64,
}

impl From<&PrivacyStatus> for PrivacyResult {
    fn from(p: &PrivacyStatus) -> Self {
        match p {
            PrivacyStatus::Off => PrivacyResult::Off { dp: false },
            PrivacyStatus::On(r) => PrivacyResult::On(PrivacySpent {
                dp: true,
                epsilon: r.epsilon,
                delta: r.delta,
                rounds: r.rounds,
                noise_multiplier: r.noise_multiplier,
                sampling_rate: r.sampling_rate,
                budget_epsilon: r.budget_epsilon,
            }),
        }
    }
}

impl From<&SyncReport> for SyncResult {
    fn from(r: &SyncReport) -> Self {
        SyncResult {
            version: r.version,
            pushed: r.pushed,
            pulled: r.rebased.is_some(),
            queued: r.still_queued,
            offline: r.offline(),
            reason: r.last_failure.clone(),
            sent_bytes: r.sent_bytes,
            masked: r.masked,
            secure_round: r.secure_round.as_ref().and_then(SecureRoundResult::of),
            privacy: r.privacy.as_ref().map(PrivacyResult::from),
        }
    }
}

/// `fetch` to one server, each request bounded by a timeout.
pub struct FetchTransport {
    pub base_url: String,
    pub timeout_ms: u32,
}

impl Transport for FetchTransport {
    async fn send(&mut self, request: &HttpRequest) -> std::result::Result<HttpResponse, String> {
        fetch(&self.base_url, request, self.timeout_ms).await
    }
}

/// `Date.now` and `setTimeout`.
pub struct BrowserClock;

impl Clock for BrowserClock {
    async fn sleep(&self, ms: u64) {
        sleep(u32::try_from(ms).unwrap_or(u32::MAX)).await
    }
}

/// Resolves after `ms` milliseconds (setTimeout exists in pages, workers and node).
pub async fn sleep(ms: u32) {
    let promise = Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        let scheduled = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .map(|f| f.call2(&global, &resolve, &JsValue::from(ms)).is_ok())
            .unwrap_or(false);
        if !scheduled {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Sends one request with the global `fetch`. Anything short of an HTTP answer (offline,
/// refused, timed out, CORS) is `Err(message)`, which the client treats as transient.
pub async fn fetch(
    base_url: &str,
    request: &HttpRequest,
    timeout_ms: u32,
) -> std::result::Result<HttpResponse, String> {
    let js = |e: JsValue| describe(&e);
    let global = js_sys::global();
    let fetch = js_sys::Reflect::get(&global, &"fetch".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("this environment has no fetch")?;
    let init = js_sys::Object::new();
    let headers = js_sys::Object::new();
    for (k, v) in &request.headers {
        js_sys::Reflect::set(&headers, &k.into(), &v.into()).map_err(js)?;
    }
    js_sys::Reflect::set(&init, &"method".into(), &request.method.into()).map_err(js)?;
    js_sys::Reflect::set(&init, &"headers".into(), &headers).map_err(js)?;
    if !request.body.is_empty() {
        let body = Uint8Array::from(&request.body[..]);
        js_sys::Reflect::set(&init, &"body".into(), &body).map_err(js)?;
    }
    // AbortSignal.timeout(ms): pages, workers and node 20 all have it.
    if let Some(signal) = js_sys::Reflect::get(&global, &"AbortSignal".into())
        .ok()
        .and_then(|a| {
            let timeout = js_sys::Reflect::get(&a, &"timeout".into()).ok()?;
            timeout
                .dyn_into::<js_sys::Function>()
                .ok()?
                .call1(&a, &JsValue::from(timeout_ms))
                .ok()
        })
    {
        js_sys::Reflect::set(&init, &"signal".into(), &signal).map_err(js)?;
    }
    let url = format!("{}{}", base_url.trim_end_matches('/'), request.path);
    let promise: Promise = fetch
        .call2(&global, &JsValue::from_str(&url), &init)
        .map_err(js)?
        .dyn_into()
        .map_err(js)?;
    // A rejected fetch says little ("Failed to fetch", "fetch failed"), and a page cannot tell
    // a refused connection from a CORS refusal (the browser hides which): name both.
    let response = JsFuture::from(promise).await.map_err(|e| {
        format!(
            "{} {url}: the request could not be made ({}): the server is unreachable, the \
             request timed out, or (in a browser) CORS blocked it: a page on another origin \
             than the server needs that origin allowed (tacit-server serve --allow-origin ORIGIN)",
            request.method,
            describe(&e)
        )
    })?;
    let get = |k: &str| js_sys::Reflect::get(&response, &k.into()).map_err(js);
    let status = get("status")?.as_f64().ok_or("no status")? as u16;
    let headers = get("headers")?;
    let etag = js_sys::Reflect::get(&headers, &"get".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .and_then(|f| f.call1(&headers, &"etag".into()).ok())
        .and_then(|v| v.as_string());
    let buffer = js_sys::Reflect::get(&response, &"arrayBuffer".into())
        .map_err(js)?
        .dyn_into::<js_sys::Function>()
        .map_err(js)?
        .call0(&response)
        .map_err(js)?
        .dyn_into::<Promise>()
        .map_err(js)?;
    let bytes = JsFuture::from(buffer).await.map_err(js)?;
    Ok(HttpResponse {
        status,
        etag,
        body: Uint8Array::new(&bytes).to_vec(),
    })
}
