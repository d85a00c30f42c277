//! What a host gives the sync pass: a [`Transport`] that moves one request to the server and
//! its answer back, a [`Clock`] to read and wait on, and a [`SyncStore`] that keeps the sync
//! state (and the local weights a pull rebased) across runs. Natively these are blocking HTTP
//! with `ureq`, the wall clock and files (`tacit sync`); in the browser `fetch`, `Date.now` with
//! `setTimeout`, and IndexedDB. The pass itself ([`super::pass`]) is written once against them.
//!
//! The traits return `impl Future` rather than being `async fn`s so that they say nothing
//! about `Send`: a browser future is not `Send`, a native blocking one need not be.

use std::future::Future;

use crate::error::Result;
use crate::store::Weights;

use super::client::{HttpRequest, HttpResponse};
use super::state::SyncState;

/// Sends requests to one server (the base URL is the transport's).
pub trait Transport {
    /// One request. `Err(message)` when no HTTP answer came (offline, refused, timed out, a
    /// CORS refusal); every HTTP status, errors included, is an `Ok` answer for the client to
    /// read.
    fn send(
        &mut self,
        request: &HttpRequest,
    ) -> impl Future<Output = std::result::Result<HttpResponse, String>>;
}

/// The time the queue's due times are in, and a way to wait for one.
pub trait Clock {
    /// Milliseconds since the Unix epoch: due times are stored, so they must survive restarts.
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// Resolves after `ms` milliseconds (a retry's backoff).
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;
}

/// Where the sync state lives between runs.
pub trait SyncStore {
    /// The stored state, `None` when this installation has never synced.
    fn load(&mut self) -> impl Future<Output = Result<Option<SyncState>>>;

    /// Stores `state` and, when given, the local weights with it, all or nothing as far as
    /// the medium allows (see each store). The pass commits after every step that changes the
    /// state, before the next request, so that a crash or a reload resumes from there and no
    /// push is ever sent under two keys.
    fn commit(
        &mut self,
        state: &SyncState,
        weights: Option<&Weights>,
    ) -> impl Future<Output = Result<()>>;
}

/// A store in memory: the state of a model that is not persisted (the browser's
/// `persist: false`), and of tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    pub state: Option<SyncState>,
    /// The local weights last committed with the state.
    pub weights: Option<Weights>,
}

impl SyncStore for MemoryStore {
    async fn load(&mut self) -> Result<Option<SyncState>> {
        Ok(self.state.clone())
    }

    async fn commit(&mut self, state: &SyncState, weights: Option<&Weights>) -> Result<()> {
        self.state = Some(state.clone());
        if let Some(w) = weights {
            self.weights = Some(w.clone());
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, on every host (`SystemTime` does not exist in the
/// browser, `Date.now` does not exist natively).
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() as u64
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}
