//! Weight sync with the aggregation server (DESIGN §7): the wire protocol, deltas, and a
//! client state machine without I/O. The native blocking transport lives in [`http`]; the
//! browser package brings `fetch` and IndexedDB to the same [`client::SyncClient`].

pub mod client;
pub mod delta;
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
#[cfg(not(target_arch = "wasm32"))]
pub mod http;
pub mod protocol;

pub use client::{
    HttpRequest, HttpResponse, PendingPush, PullOutcome, PushOutcome, SyncClient, SyncConfig,
};
pub use delta::Delta;
