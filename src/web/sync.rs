//! `rm.sync(options)` in the browser: the crate's sans-IO [`SyncClient`] driven with `fetch`,
//! its state (the reference weights, the queue of pushes with their idempotency keys, the
//! key counter) kept in IndexedDB so that an update made offline is pushed later, and never
//! twice: a queued push keeps its key through every retry and every reload.
//!
//! One call: queue what local training changed since the last sync (clipped) and store the
//! queue; push what is due, retrying transient failures with backoff within a short budget;
//! then pull the global if it is newer and rebase the local weights onto it, storing weights
//! and sync state in one transaction.

use js_sys::{Promise, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::error::describe;
use crate::error::{Error, Result};
use crate::store::{self, Weights};
use crate::sync::{
    HttpRequest, HttpResponse, PendingPush, PullOutcome, PushOutcome, SyncClient, SyncConfig,
};

/// What IndexedDB keeps per model for sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncState {
    /// The last pulled global plus every change already queued (`SyncClient::reference`).
    pub reference: Weights,
    pub queue: Vec<PendingPush>,
    /// Per-installation prefix of idempotency keys.
    pub key_prefix: String,
    pub next_seq: u64,
    /// Observations trained on since the last commit to the queue (the next push's weight).
    pub unsynced_examples: u64,
}

/// The JSON part of the stored record (the reference weights and push bodies are bytes).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredState {
    key_prefix: String,
    next_seq: u64,
    unsynced_examples: u64,
    queue: Vec<StoredPush>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredPush {
    key: String,
    base_version: u64,
    n_examples: u64,
    attempts: u32,
    not_before_ms: u64,
    needs_rebase: bool,
}

impl SyncState {
    /// A fresh state whose reference is `weights` (a model's starting point).
    pub fn fresh(weights: &Weights) -> Self {
        SyncState {
            reference: weights.clone(),
            queue: Vec::new(),
            key_prefix: random_prefix(),
            next_seq: 0,
            unsynced_examples: 0,
        }
    }

    /// The IndexedDB record: `{ state: string, reference: Uint8Array, bodies: Uint8Array[] }`.
    pub fn to_js(&self) -> Result<JsValue> {
        let stored = StoredState {
            key_prefix: self.key_prefix.clone(),
            next_seq: self.next_seq,
            unsynced_examples: self.unsynced_examples,
            queue: self
                .queue
                .iter()
                .map(|p| StoredPush {
                    key: p.key.clone(),
                    base_version: p.base_version,
                    n_examples: p.n_examples,
                    attempts: p.attempts,
                    not_before_ms: p.not_before_ms,
                    needs_rebase: p.needs_rebase,
                })
                .collect(),
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| Error::Storage(format!("encoding the sync state: {e}")))?;
        let bodies = js_sys::Array::new();
        for p in &self.queue {
            bodies.push(&Uint8Array::from(&p.body[..]));
        }
        let obj = js_sys::Object::new();
        let reference = Uint8Array::from(&store::to_bytes(&self.reference)?[..]);
        for (k, v) in [
            ("state", JsValue::from(json)),
            ("reference", reference.into()),
            ("bodies", bodies.into()),
        ] {
            js_sys::Reflect::set(&obj, &k.into(), &v)
                .map_err(|e| Error::Storage(format!("sync record: {}", describe(&e))))?;
        }
        Ok(obj.into())
    }

    pub fn from_js(value: &JsValue) -> Result<Self> {
        let unreadable = || Error::Storage("the stored sync state is unreadable".into());
        let field = |k: &str| js_sys::Reflect::get(value, &k.into()).unwrap_or_default();
        let stored: StoredState = field("state")
            .as_string()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(unreadable)?;
        let reference = field("reference")
            .dyn_into::<Uint8Array>()
            .map_err(|_| unreadable())?
            .to_vec();
        let bodies = js_sys::Array::from(&field("bodies"));
        if bodies.length() as usize != stored.queue.len() {
            return Err(unreadable());
        }
        let queue = stored
            .queue
            .into_iter()
            .zip(bodies.iter())
            .map(|(p, body)| {
                Ok(PendingPush {
                    key: p.key,
                    base_version: p.base_version,
                    n_examples: p.n_examples,
                    body: body
                        .dyn_into::<Uint8Array>()
                        .map_err(|_| unreadable())?
                        .to_vec(),
                    attempts: p.attempts,
                    not_before_ms: p.not_before_ms,
                    needs_rebase: p.needs_rebase,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SyncState {
            reference: store::from_bytes(&reference)?,
            queue,
            key_prefix: stored.key_prefix,
            next_seq: stored.next_seq,
            unsynced_examples: stored.unsynced_examples,
        })
    }

    pub fn client(&self, config: SyncConfig) -> Result<SyncClient> {
        SyncClient::new(
            config,
            self.reference.clone(),
            self.queue.clone(),
            &self.key_prefix,
            self.next_seq,
        )
    }

    /// The state after `client` ran (the unsynced count is the caller's to reset).
    pub fn update_from(&mut self, client: &SyncClient) {
        self.reference = client.reference().clone();
        self.queue = client.queue().to_vec();
        self.next_seq = client.next_seq();
    }
}

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
}

impl SyncOptions {
    pub fn config(&self, local_name: &str) -> Result<SyncConfig> {
        if self.url.is_empty() {
            return Err(Error::InvalidConfig("sync needs the server's url".into()));
        }
        let mut c = SyncConfig::new(self.model.as_deref().unwrap_or(local_name), &self.token);
        if let Some(n) = self.clip_norm {
            c.clip_norm = n;
        }
        Ok(c)
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
}

/// Milliseconds since the epoch (the queue's clock must survive reloads).
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn random_prefix() -> String {
    // Uniqueness per installation is what matters: 2 × 52 random bits and the clock.
    let a = (js_sys::Math::random() * (1u64 << 52) as f64) as u64;
    let b = (js_sys::Math::random() * (1u64 << 52) as f64) as u64;
    format!("w{:013x}{:013x}{:x}", a, b, now_ms())
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
        .call2(&global, &url.into(), &init)
        .map_err(js)?
        .dyn_into()
        .map_err(js)?;
    let response = JsFuture::from(promise).await.map_err(js)?;
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

/// Pushes every due update (retrying within `budget_ms`), then reports whether the server
/// was unreachable. Persisting after each step is the caller's (`persist`).
pub async fn push_due<F, P>(
    client: &mut SyncClient,
    base_url: &str,
    timeout_ms: u32,
    budget_ms: u32,
    mut persist: F,
) -> Result<(usize, Option<String>)>
where
    F: FnMut(&SyncClient) -> P,
    P: std::future::Future<Output = Result<()>>,
{
    let start = now_ms();
    let mut pushed = 0;
    let mut failure = None;
    loop {
        let now = now_ms();
        if let Some(request) = client.due_push(now) {
            let answer = fetch(base_url, &request, timeout_ms).await;
            let outcome = client.on_push_response(answer, now_ms());
            // Whatever happened to the queue (accepted, rescheduled, dropped) is stored
            // before the next step, so that a reload resumes from here.
            persist(client).await?;
            match outcome? {
                PushOutcome::Accepted(_) => {
                    pushed += 1;
                    failure = None;
                }
                PushOutcome::Retry { reason, .. } => failure = Some(reason),
                PushOutcome::NeedsRebase => break,
            }
            continue;
        }
        match client.next_due_ms() {
            Some(due) if due.saturating_sub(start) <= budget_ms as u64 => {
                sleep(due.saturating_sub(now).min(u32::MAX as u64) as u32).await;
            }
            _ => break,
        }
    }
    Ok((pushed, failure))
}

pub fn pulled(outcome: &PullOutcome) -> bool {
    matches!(outcome, PullOutcome::Updated { .. })
}
