//! The native host's ports: blocking HTTP with `ureq` and the wall clock with a thread sleep.
//! Nothing here compiles for wasm32 (the browser brings `fetch` and `setTimeout`).

use std::time::Duration;

use crate::error::Result;
use crate::head::Head;
use crate::objective::ObjectiveKind;
use crate::store::Weights;

use super::client::{HttpRequest, HttpResponse, SyncClient};
use super::pass::{self, PassOptions, SyncReport};
use super::ports::{self, Clock, MemoryStore};
use super::secagg::session;

pub use super::ports::now_ms;
pub use super::state::random_key_prefix;

/// Sends [`HttpRequest`]s to one server and blocks for the answer. A failure to get any answer
/// is `Err(message)`; every HTTP status, errors included, is an `Ok` response for the client
/// to interpret. Every blocking transport is a [`ports::Transport`] whose future is ready at
/// once ([`Blocking`]).
pub trait Transport {
    fn send(&mut self, request: &HttpRequest) -> std::result::Result<HttpResponse, String>;
}

/// A blocking [`Transport`] as the pass's async one.
pub struct Blocking<'a, T: Transport + ?Sized>(pub &'a mut T);

impl<T: Transport + ?Sized> ports::Transport for Blocking<'_, T> {
    async fn send(&mut self, request: &HttpRequest) -> std::result::Result<HttpResponse, String> {
        self.0.send(request)
    }
}

/// The wall clock; waiting blocks the thread (the CLI has nothing else to do meanwhile).
pub struct SystemClock;

impl Clock for SystemClock {
    async fn sleep(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Blocking HTTP over `ureq` (plain HTTP; a TLS terminator in front of the server, or
/// ureq's `rustls` feature, for anything beyond loopback).
pub struct UreqTransport {
    agent: ureq::Agent,
    base_url: String,
}

/// Largest answer read (a model's weights): 256 MiB.
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

impl UreqTransport {
    /// `base_url` like `http://127.0.0.1:8080` (no trailing path).
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        UreqTransport {
            agent,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }
}

impl Transport for UreqTransport {
    fn send(&mut self, request: &HttpRequest) -> std::result::Result<HttpResponse, String> {
        let url = format!("{}{}", self.base_url, request.path);
        let result = match request.method {
            "GET" => {
                let mut builder = self.agent.get(&url);
                for (k, v) in &request.headers {
                    builder = builder.header(k, v);
                }
                builder.call()
            }
            method @ ("POST" | "PUT") => {
                let mut builder = if method == "POST" {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                for (k, v) in &request.headers {
                    builder = builder.header(k, v);
                }
                builder.send(&request.body[..])
            }
            other => return Err(format!("unsupported method {other}")),
        };
        let mut response = result.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok(HttpResponse { status, etag, body })
    }
}

/// One blocking pass over `client` with nothing persisted (the caller keeps the client):
/// [`pass::run`] with the wall clock. The delta, if any, must already be committed; `local`
/// is rebased in place when a newer global is pulled. A secure round is waited for as long
/// as [`session::SessionOptions::default`] says; [`sync_once_with`] takes other options.
pub fn sync_once(
    client: &mut SyncClient,
    transport: &mut dyn Transport,
    local: &mut Head,
    retry_budget: Duration,
) -> Result<SyncReport> {
    let options = PassOptions {
        retry_budget_ms: u64::try_from(retry_budget.as_millis()).unwrap_or(u64::MAX),
        fallback_objective: ObjectiveKind::Implicit,
        secure: session::SessionOptions::default(),
    };
    sync_once_with(client, transport, local, options)
}

/// [`sync_once`] with every option of the pass.
pub fn sync_once_with(
    client: &mut SyncClient,
    transport: &mut dyn Transport,
    local: &mut Head,
    options: PassOptions,
) -> Result<SyncReport> {
    let weights = Weights::new(local.clone());
    let report = pollster::block_on(pass::run(
        client,
        &weights,
        options,
        &mut Blocking(transport),
        &SystemClock,
        &mut MemoryStore::default(),
    ))?;
    if let Some(rebased) = &report.rebased {
        *local = rebased.head.clone();
    }
    Ok(report)
}

/// One blocking secure-aggregation round for `client`'s queued pushes (nothing persisted: the
/// caller keeps the client, whose state holds the in-flight round): [`session::take_part`]
/// with the wall clock.
pub fn secure_once(
    client: &mut SyncClient,
    transport: &mut dyn Transport,
    options: session::SessionOptions,
) -> std::result::Result<session::SecureOutcome, crate::sync::secagg::SecAggError> {
    pollster::block_on(session::take_part(
        client,
        options,
        &mut Blocking(transport),
        &SystemClock,
        &mut MemoryStore::default(),
    ))
}
