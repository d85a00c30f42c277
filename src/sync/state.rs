//! The sync client's persistent state, defined and serialised once for every host: the
//! reference weights (the last pulled global plus every change already queued), the queue of
//! pushes with their idempotency keys, the key counter, and the examples trained on since the
//! last commit to the queue.
//!
//! Its stored form is a [`SyncRecord`]: a JSON text of everything but the bytes, the reference
//! as a safetensors file, and each queued push's body apart, so that no host has to write
//! bytes as JSON numbers. IndexedDB keeps the three in one record; `tacit sync` keeps them as
//! files of a state directory (see `files.rs`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{self, Weights};

use super::client::PendingPush;
use super::delta::{self, Delta};

#[derive(Debug, Clone, PartialEq)]
pub struct SyncState {
    /// The last pulled global plus every change already queued (see `client.rs`).
    pub reference: Weights,
    /// Pushes not yet accepted, oldest first.
    pub queue: Vec<PendingPush>,
    /// Per-installation prefix of idempotency keys (`{key_prefix}-{seq}`).
    pub key_prefix: String,
    /// The next key's `seq`: stored so that keys are never reused.
    pub next_seq: u64,
    /// Examples trained on since the last commit to the queue (the next push's weight).
    pub unsynced_examples: u64,
    /// The secure-aggregation round whose masked input holds queued pushes, until its outcome
    /// is known (`secagg::session`): those pushes are then dropped (counted) or offered again.
    pub secure_round: Option<crate::sync::secagg::session::InFlight>,
}

/// The stored form of a [`SyncState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    /// JSON: `{ keyPrefix, nextSeq, unsyncedExamples, queue: [{ key, baseVersion, nExamples,
    /// attempts, notBeforeMs, needsRebase }] }` (the IndexedDB records of earlier versions
    /// have this shape).
    pub state: String,
    /// The reference weights, safetensors.
    pub reference: Vec<u8>,
    /// The body of each queued push, in queue order.
    pub bodies: Vec<Vec<u8>>,
}

/// The JSON part of a record (push bodies are skipped by `PendingPush`'s serde).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Meta {
    key_prefix: String,
    next_seq: u64,
    #[serde(default)]
    unsynced_examples: u64,
    queue: Vec<PendingPush>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secure_round: Option<crate::sync::secagg::session::InFlight>,
}

impl SyncState {
    /// A state that starts from `reference` (a fresh model's weights, or the first pulled
    /// global) with nothing queued and a new random key prefix. The reference is the shared
    /// part only: a personal part is never synced, so it has no reference.
    pub fn fresh(reference: Weights) -> Self {
        SyncState {
            reference: reference.shared(),
            queue: Vec::new(),
            key_prefix: random_key_prefix(),
            next_seq: 0,
            unsynced_examples: 0,
            secure_round: None,
        }
    }

    /// Takes every queued push back: the reference loses the deltas it holds (it returns to
    /// the last pulled global, or the starting weights) and the queue empties. Returns that
    /// reference, the shared head a model that forgets its user goes back to. Pushes the
    /// server already accepted are not in the queue: they are part of the global model.
    pub fn forget(&mut self) -> Result<Weights> {
        let mut head = self.reference.head.clone();
        for push in self.queue.iter().rev().filter(|p| p.in_reference) {
            let delta = Delta::from_bytes(&push.body)?;
            let undo: Vec<f32> = delta.values.iter().map(|v| -v).collect();
            head = delta::apply(&head, &undo)?;
        }
        self.reference.head = head;
        self.queue.clear();
        self.unsynced_examples = 0;
        // Nothing left to drop when its round's outcome comes (a masked input already sent
        // cannot be taken back).
        self.secure_round = None;
        Ok(self.reference.clone())
    }

    pub fn to_record(&self) -> Result<SyncRecord> {
        let meta = Meta {
            key_prefix: self.key_prefix.clone(),
            next_seq: self.next_seq,
            unsynced_examples: self.unsynced_examples,
            queue: self.queue.clone(),
            secure_round: self.secure_round.clone(),
        };
        let state = serde_json::to_string(&meta)
            .map_err(|e| Error::Storage(format!("encoding the sync state: {e}")))?;
        Ok(SyncRecord {
            state,
            reference: store::to_bytes(&self.reference)?,
            bodies: self.queue.iter().map(|p| p.body.clone()).collect(),
        })
    }

    /// Reads a record; anything inconsistent is a [`Error::Storage`] (the state is not
    /// guessed at: a wrong queue could push an update twice).
    pub fn from_record(record: SyncRecord) -> Result<Self> {
        let meta: Meta = serde_json::from_str(&record.state)
            .map_err(|e| Error::Storage(format!("the stored sync state is unreadable: {e}")))?;
        if meta.queue.len() != record.bodies.len() {
            return Err(Error::Storage(format!(
                "the stored sync state lists {} pushes but holds {} bodies",
                meta.queue.len(),
                record.bodies.len()
            )));
        }
        let queue = meta
            .queue
            .into_iter()
            .zip(record.bodies)
            .map(|(push, body)| PendingPush { body, ..push })
            .collect();
        Ok(SyncState {
            reference: store::from_bytes(&record.reference)?,
            queue,
            key_prefix: meta.key_prefix,
            next_seq: meta.next_seq,
            unsynced_examples: meta.unsynced_examples,
            secure_round: meta.secure_round,
        })
    }
}

/// A random idempotency-key prefix for a new installation: 32 hex digits. Uniqueness, not
/// secrecy, is what matters, so the entropy is whatever the host has without a dependency:
/// the OS-seeded hasher keys of the standard library natively, `Math.random` and the clock in
/// the browser.
pub fn random_key_prefix() -> String {
    let [a, b] = entropy();
    format!("{a:016x}{b:016x}")
}

#[cfg(not(target_arch = "wasm32"))]
fn entropy() -> [u64; 2] {
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
    [a, h2.finish()]
}

#[cfg(target_arch = "wasm32")]
fn entropy() -> [u64; 2] {
    // 52 random bits each (what a double holds), the clock mixed into the top of the first.
    let bits = || (js_sys::Math::random() * (1u64 << 52) as f64) as u64;
    [bits() ^ super::ports::now_ms().rotate_left(52), bits()]
}
