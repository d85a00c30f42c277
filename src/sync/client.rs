//! The sync client as a state machine without I/O: it builds [`HttpRequest`]s and reads
//! [`HttpResponse`]s, and the caller moves the bytes (a blocking HTTP agent natively, `fetch`
//! in the browser) and persists [`SyncClient::reference`] and [`SyncClient::queue`] (files, or
//! IndexedDB). Nothing here touches a socket, a clock or a disk, so the same code runs
//! natively and in wasm32, and tests drive it with a scripted server.
//!
//! The bookkeeping. `reference` is the global the client last pulled, plus every local change
//! already queued; `local − reference` is therefore what has not been queued yet. Committing
//! local training queues that difference (clipped) under a fresh idempotency key and moves
//! `reference` to `local`. A queued push keeps its key through every retry, so a push whose
//! answer was lost is recognised by the server and counted once. Pulling a newer global `G`
//! rebases: `local = G + (local − reference)` and `reference = G`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::head::Head;
use crate::objective::ObjectiveKind;
use crate::store::{self, Weights};

use super::delta::{self, Delta};
use super::protocol::{self, ApiErrorCode, ErrorBody, UpdateAccepted};
use super::state::SyncState;

/// A request for the transport to send, relative to the server's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the transport got back. A transport failure (no connection, timeout) is not a
/// response: pass it as `Err(message)` to the `on_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

/// Client settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    pub model: String,
    /// Bearer token issued by `tacit-server token create`.
    pub token: String,
    /// L2 bound every pushed delta is clipped to (keep it at or under the server's bound).
    pub clip_norm: f64,
    /// First retry delay; doubled after each failed attempt, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl SyncConfig {
    pub fn new(model: &str, token: &str) -> Self {
        SyncConfig {
            model: model.to_string(),
            token: token.to_string(),
            clip_norm: 10.0,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
        }
    }
}

/// A queued push. Its serde form is the JSON part of a stored [`SyncState`] (the body is
/// stored apart, as bytes: see [`super::state::SyncRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PendingPush {
    /// Fixed when the push is queued and reused on every retry.
    pub key: String,
    pub base_version: u64,
    pub n_examples: u64,
    /// The delta's wire bytes.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not to be sent before this time (caller's clock, milliseconds).
    pub not_before_ms: u64,
    /// The server said the base is too old: relabel onto the next pulled global first.
    pub needs_rebase: bool,
    /// Whether the reference holds this delta: true from the commit until a newer global is
    /// pulled (the reference then becomes that global). `forget` takes back exactly these.
    /// Records written before the flag existed read as true.
    #[serde(default = "in_reference_default")]
    pub in_reference: bool,
}

fn in_reference_default() -> bool {
    true
}

/// What became of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored by the server (now or on an earlier attempt whose answer was lost).
    Accepted(UpdateAccepted),
    /// Transient failure: kept in the queue, due again at `retry_at_ms`.
    Retry { retry_at_ms: u64, reason: String },
    /// The base is too old for the server: kept, and relabelled onto the next pull.
    NeedsRebase,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// The server has nothing newer than `reference`.
    Unchanged,
    /// A newer global was installed and the local head rebased onto it.
    Updated { version: u64 },
}

pub struct SyncClient {
    config: SyncConfig,
    /// Idempotency keys are `{key_prefix}-{seq}`: a random prefix per installation and a
    /// counter persisted with the queue.
    state: SyncState,
}

impl SyncClient {
    /// `reference` is the last pulled global (version = its `version`) plus queued changes;
    /// for a fresh client, the global it started from. `queue` and `next_seq` are what the
    /// caller persisted (empty and 0 the first time).
    pub fn new(
        config: SyncConfig,
        reference: Weights,
        queue: Vec<PendingPush>,
        key_prefix: &str,
        next_seq: u64,
    ) -> Result<Self> {
        Self::from_state(
            config,
            SyncState {
                reference,
                queue,
                key_prefix: key_prefix.to_string(),
                next_seq,
                unsynced_examples: 0,
                secure_round: None,
            },
        )
    }

    /// A client over a stored state (see [`SyncState`]).
    pub fn from_state(config: SyncConfig, state: SyncState) -> Result<Self> {
        let (key_prefix, next_seq) = (&state.key_prefix, state.next_seq);
        if !protocol::valid_model_name(&config.model) {
            return Err(Error::InvalidConfig(format!(
                "model name '{}' is not 1-{} characters of [A-Za-z0-9._-]",
                config.model,
                protocol::MAX_MODEL_NAME
            )));
        }
        if !protocol::valid_idempotency_key(&format!("{key_prefix}-{next_seq}")) {
            return Err(Error::InvalidConfig(format!(
                "key prefix '{key_prefix}' does not make valid idempotency keys"
            )));
        }
        crate::error::check::in_range("clip_norm", config.clip_norm, f64::MIN_POSITIVE, 1e12)?;
        Ok(SyncClient { config, state })
    }

    /// Everything to persist after a call that changed it.
    pub fn state(&self) -> &SyncState {
        &self.state
    }

    /// Counts examples trained on since the last commit; [`SyncClient::commit_local`] with
    /// the pass's `local` queues them as the next push's weight.
    pub fn state_mut(&mut self) -> &mut SyncState {
        &mut self.state
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The global version the client builds on.
    pub fn base_version(&self) -> u64 {
        self.state.reference.version
    }

    pub fn reference(&self) -> &Weights {
        &self.state.reference
    }

    pub fn queue(&self) -> &[PendingPush] {
        &self.state.queue
    }

    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    /// Queues what `local` changed since the last commit, clipped to `clip_norm`, under a new
    /// idempotency key, and returns the key (`None` when nothing changed). Clipping happens
    /// here, once: the queued bytes are what gets pushed on every retry.
    pub fn commit_local(
        &mut self,
        local: &Head,
        n_examples: u64,
        objective: ObjectiveKind,
        now_ms: u64,
    ) -> Result<Option<String>> {
        let mut values = delta::difference(local, &self.state.reference.head)?;
        crate::error::check::finite("local weights", &values)?;
        if n_examples == 0 || values.iter().all(|&v| v == 0.0) {
            return Ok(None);
        }
        delta::clip(&mut values, self.config.clip_norm)?;
        let delta = Delta {
            config: local.config.clone(),
            values,
            base_version: self.state.reference.version,
            n_examples,
            objective,
        };
        let body = delta.to_bytes()?;
        // What was queued is the clipped delta: the reference moves by exactly that much, so
        // whatever clipping removed is offered again at the next commit instead of being lost.
        self.state.reference.head = delta::apply(&self.state.reference.head, &delta.values)?;
        let key = self.fresh_key();
        self.state.queue.push(PendingPush {
            key: key.clone(),
            base_version: delta.base_version,
            n_examples,
            body,
            attempts: 0,
            not_before_ms: now_ms,
            needs_rebase: false,
            in_reference: true,
        });
        Ok(Some(key))
    }

    fn fresh_key(&mut self) -> String {
        let key = format!("{}-{}", self.state.key_prefix, self.state.next_seq);
        self.state.next_seq += 1;
        key
    }

    /// A request of this client to the server: its token, and a JSON content type when it
    /// has a body (what every endpoint but a push reads).
    pub fn request(&self, method: &'static str, path: String, body: Vec<u8>) -> HttpRequest {
        let mut headers = vec![self.authorization()];
        if !body.is_empty() {
            headers.push(("Content-Type".to_string(), "application/json".to_string()));
        }
        HttpRequest {
            method,
            path,
            headers,
            body,
        }
    }

    fn authorization(&self) -> (String, String) {
        (
            "Authorization".to_string(),
            format!("Bearer {}", self.config.token),
        )
    }

    /// The next push to send: the oldest queued one, if it is due and not waiting for a
    /// rebase. Pushes go one at a time, oldest first, so their order on the server is the
    /// order in which they were made.
    pub fn due_push(&self, now_ms: u64) -> Option<HttpRequest> {
        let next = self.state.queue.first()?;
        if next.needs_rebase || next.not_before_ms > now_ms {
            return None;
        }
        Some(HttpRequest {
            method: "POST",
            path: protocol::updates_path(&self.config.model),
            headers: vec![
                self.authorization(),
                (protocol::IDEMPOTENCY_KEY.to_string(), next.key.clone()),
                (
                    "Content-Type".to_string(),
                    protocol::SAFETENSORS.to_string(),
                ),
            ],
            body: next.body.clone(),
        })
    }

    /// When the oldest queued push is due (`None`: the queue is empty or waits for a pull).
    pub fn next_due_ms(&self) -> Option<u64> {
        self.state
            .queue
            .first()
            .filter(|p| !p.needs_rebase)
            .map(|p| p.not_before_ms)
    }

    /// Reads the answer to the push made by [`SyncClient::due_push`].
    ///
    /// What becomes of the push depends on whether the refusal can ever be outlived:
    /// - 200–202: stored; removed from the queue.
    /// - 409 `stale_base_version`: kept and relabelled onto the next pulled global.
    /// - 401/403: kept, and an error (`sync_unauthorized`): fix the token, then sync again.
    /// - 409 `secure_aggregation_required`: kept, and an error (`sync_conflict`): the model
    ///   is aggregated securely; `secagg::session` takes the queue into a round.
    /// - 400 (`malformed`), 413 (`too_large`), 422 (`non_finite`, `norm_over_bound`) and any
    ///   other 409 (`dims_mismatch`, `idempotency_key_reused`): those bytes can never be
    ///   accepted; dropped, and an error (`sync_rejected`, `sync_conflict`) says so.
    /// - Everything else — no answer at all, 404 (the model does not exist *yet*), 408, 429,
    ///   5xx, or a status this client does not know — is transient: kept, retried with
    ///   backoff, and the reason is the outcome. An update is never lost to a refusal it can
    ///   outlive.
    pub fn on_push_response(
        &mut self,
        response: std::result::Result<HttpResponse, String>,
        now_ms: u64,
    ) -> Result<PushOutcome> {
        if self.state.queue.is_empty() {
            return Err(Error::InvalidConfig(
                "a push answer arrived with an empty queue".into(),
            ));
        }
        let response = match response {
            Ok(r) => r,
            Err(reason) => return Ok(self.retry_later(now_ms, reason)),
        };
        if let 200..=202 = response.status {
            let accepted: UpdateAccepted =
                serde_json::from_slice(&response.body).map_err(|e| Error::SyncRejected {
                    status: response.status,
                    code: "malformed".into(),
                    message: format!("unreadable push answer: {e}"),
                })?;
            self.state.queue.remove(0);
            return Ok(PushOutcome::Accepted(accepted));
        }
        let status = response.status;
        let body = error_body(&response);
        match (status, ApiErrorCode::parse(&body.code)) {
            (409, Some(ApiErrorCode::StaleBaseVersion)) => {
                self.state.queue[0].needs_rebase = true;
                Ok(PushOutcome::NeedsRebase)
            }
            (401 | 403, _) => Err(Error::SyncUnauthorized(body.message)),
            // The model takes secure rounds only: the push is kept for one
            // (`secagg::session`), never dropped as a conflict.
            (409, None) if body.code == protocol::SECURE_AGGREGATION_REQUIRED => Err(
                Error::SyncConflict(format!("{}: {}", body.code, body.message)),
            ),
            (409, _) => {
                self.state.queue.remove(0);
                Err(Error::SyncConflict(format!(
                    "{}: {}",
                    body.code, body.message
                )))
            }
            (400 | 413 | 422, _) => {
                self.state.queue.remove(0);
                Err(Error::SyncRejected {
                    status,
                    code: body.code,
                    message: body.message,
                })
            }
            _ => {
                let reason = format!("server answered {status} ({})", body.code);
                Ok(self.retry_later(now_ms, reason))
            }
        }
    }

    fn retry_later(&mut self, now_ms: u64, reason: String) -> PushOutcome {
        let push = &mut self.state.queue[0];
        push.attempts = push.attempts.saturating_add(1);
        let delay = backoff_ms(
            self.config.backoff_base_ms,
            self.config.backoff_max_ms,
            push.attempts,
        );
        push.not_before_ms = now_ms.saturating_add(delay);
        PushOutcome::Retry {
            retry_at_ms: push.not_before_ms,
            reason,
        }
    }

    /// A conditional GET of the global weights: the server answers 304 while its version is
    /// the one we have.
    pub fn pull_request(&self) -> HttpRequest {
        HttpRequest {
            method: "GET",
            path: protocol::model_path(&self.config.model),
            headers: vec![
                self.authorization(),
                (
                    "If-None-Match".to_string(),
                    protocol::etag(self.state.reference.version),
                ),
            ],
            body: Vec::new(),
        }
    }

    /// Reads the answer to [`SyncClient::pull_request`]; on a newer global, rebases `local`
    /// onto it and relabels pushes the server had refused as too old.
    pub fn on_pull_response(
        &mut self,
        response: std::result::Result<HttpResponse, String>,
        local: &mut Head,
    ) -> Result<PullOutcome> {
        let response = response.map_err(Error::Network)?;
        match response.status {
            304 => return Ok(PullOutcome::Unchanged),
            200 => {}
            408 | 429 | 500..=599 => {
                return Err(Error::Network(format!(
                    "server answered {}",
                    response.status
                )))
            }
            401 | 403 => return Err(Error::SyncUnauthorized(error_body(&response).message)),
            status => {
                let body = error_body(&response);
                return Err(Error::SyncRejected {
                    status,
                    code: body.code,
                    message: body.message,
                });
            }
        }
        let global = store::from_bytes_expecting(&response.body, &self.state.reference.head.config)
            .map_err(|e| match e {
                Error::IncompatibleWeights(m) => Error::SyncConflict(m),
                other => other,
            })?;
        crate::error::check::version("the pulled global's", global.version)?;
        if global.version <= self.state.reference.version {
            return Ok(PullOutcome::Unchanged);
        }
        *local = delta::rebase(local, &self.state.reference.head, &global.head)?;
        let version = global.version;
        self.state.reference = Weights {
            head: global.head,
            exposure_head: self.state.reference.exposure_head.take(),
            objective: self.state.reference.objective,
            version,
            personal: None,
        };
        for push in &mut self.state.queue {
            push.in_reference = false;
        }
        self.relabel_refused(version)?;
        Ok(PullOutcome::Updated { version })
    }

    /// A difference is a direction, valid on any base: a push refused as too old is
    /// relabelled with the new base version and a new key (the old key was never stored,
    /// since the server stores nothing for a refused push).
    fn relabel_refused(&mut self, version: u64) -> Result<()> {
        for i in 0..self.state.queue.len() {
            if !self.state.queue[i].needs_rebase {
                continue;
            }
            let mut delta = Delta::from_bytes(&self.state.queue[i].body)?;
            delta.base_version = version;
            let body = delta.to_bytes()?;
            let key = self.fresh_key();
            let push = &mut self.state.queue[i];
            push.body = body;
            push.base_version = version;
            push.key = key;
            push.needs_rebase = false;
            push.attempts = 0;
        }
        Ok(())
    }
}

/// `base · 2^(attempts−1)`, capped at `max`.
pub fn backoff_ms(base: u64, max: u64, attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(63);
    base.saturating_mul(1u64 << doublings).min(max)
}

/// The server's JSON error body of an answer, or one made of its status and bytes.
pub(crate) fn error_body(response: &HttpResponse) -> ErrorBody {
    serde_json::from_slice(&response.body).unwrap_or_else(|_| ErrorBody {
        code: format!("http_{}", response.status),
        message: String::from_utf8_lossy(&response.body).into_owned(),
    })
}
