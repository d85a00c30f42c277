//! Native transport: blocking HTTP with `ureq`, and a blocking driver that runs one sync pass
//! (push what is due, retrying with backoff within a time budget, then pull). The browser
//! drives the same [`SyncClient`] with `fetch` instead; nothing here compiles for wasm32.

use std::time::Duration;

use crate::error::Result;
use crate::head::Head;

use super::client::{HttpRequest, HttpResponse, PullOutcome, PushOutcome, SyncClient};

/// Sends [`HttpRequest`]s to one server. A failure to get any answer is `Err(message)`;
/// every HTTP status, errors included, is an `Ok` response for the client to interpret.
pub trait Transport {
    fn send(&mut self, request: &HttpRequest) -> std::result::Result<HttpResponse, String>;
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

/// What one sync pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub pushed: usize,
    /// Pushes still queued (offline, or out of retry budget).
    pub still_queued: usize,
    /// The last transient failure, if any push is still queued because of one.
    pub last_failure: Option<String>,
    pub pull: Option<PullOutcome>,
}

/// One pass: push every due update (retrying transient failures with the client's backoff
/// while `retry_budget` lasts; later ones wait in the queue for the next pass), then pull and
/// rebase `local`. A failed pull leaves `local` untouched and is reported as an error only
/// when nothing else went wrong, so an offline pass still returns what was queued.
pub fn sync_once(
    client: &mut SyncClient,
    transport: &mut dyn Transport,
    local: &mut Head,
    retry_budget: Duration,
) -> Result<SyncReport> {
    // Wall-clock milliseconds: queued pushes carry their due times across runs and restarts.
    let deadline = now_ms().saturating_add(retry_budget.as_millis() as u64);
    let mut pushed = 0;
    let mut last_failure = None;
    loop {
        let now = now_ms();
        if let Some(request) = client.due_push(now) {
            match client.on_push_response(transport.send(&request), now_ms())? {
                PushOutcome::Accepted(_) => pushed += 1,
                PushOutcome::Retry { reason, .. } => last_failure = Some(reason),
                // Pull first: the relabelled push goes out on the next pass.
                PushOutcome::NeedsRebase => break,
            }
            continue;
        }
        match client.next_due_ms() {
            Some(due) if due <= deadline => {
                std::thread::sleep(Duration::from_millis(due.saturating_sub(now)));
            }
            _ => break,
        }
    }
    if last_failure.is_some() && !client.queue().is_empty() {
        // Still unreachable: do not also wait for a pull that would fail the same way.
        return Ok(SyncReport {
            pushed,
            still_queued: client.queue().len(),
            last_failure,
            pull: None,
        });
    }
    let pull = client.on_pull_response(transport.send(&client.pull_request()), local)?;
    Ok(SyncReport {
        pushed,
        still_queued: client.queue().len(),
        last_failure: None,
        pull: Some(pull),
    })
}

/// Milliseconds since the Unix epoch: the clock the native client's due times use.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random idempotency-key prefix for a new installation, from the OS-seeded hasher keys
/// of the standard library (no extra dependency; uniqueness, not secrecy, is what matters).
pub fn random_key_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let a = h.finish();
    let mut h2 = std::collections::hash_map::RandomState::new().build_hasher();
    h2.write_u64(a);
    format!("{:016x}{:016x}", a, h2.finish())
}
