//! Weight sync with the aggregation server (DESIGN §7): the wire protocol, deltas, a client
//! state machine without I/O, its persistent state, and one sync pass written against host
//! ports (a transport, a clock, a store). The native host's ports are in [`http`] and
//! [`files`]; the browser package brings `fetch` and IndexedDB to the same [`pass`].

pub mod aggregate;
pub mod client;
pub mod delta;
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
#[cfg(not(target_arch = "wasm32"))]
pub mod http;
pub mod pass;
pub mod ports;
pub mod privacy;
pub mod protocol;
pub mod secagg;
pub mod state;

pub use client::{
    HttpRequest, HttpResponse, PendingPush, PullOutcome, PushOutcome, SyncClient, SyncConfig,
};
pub use delta::Delta;
pub use pass::{PassOptions, SyncReport};
pub use ports::{now_ms, Clock, MemoryStore, SyncStore, Transport};
pub use state::{random_key_prefix, SyncRecord, SyncState};
