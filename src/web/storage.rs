//! Persistence in IndexedDB: one database `tacit-rm` with two object stores.
//!
//! - `models`, keyed by model name: `{ spec: string (JSON), weights: Uint8Array (safetensors),
//!   history: string (JSON of the training history `stats()` reports; absent in older records) }`.
//! - `observations`, keyed by `[name, seq]`: `{ entry: string (JSON of a logged observation) }`.
//! - `sync`, keyed by model name: the sync client's [`SyncState`] as its record
//!   `{ state: string (JSON), reference: Uint8Array, bodies: Uint8Array[] }`.
//!
//! Every commit is one transaction, and a call resolves only after its transaction's
//! `complete` event: an acknowledged observation is on disk, and "new weights + drop the
//! observations they were trained on" happens entirely or not at all. A page reload during
//! training therefore finds the last committed weights and every acknowledged observation.
//!
//! Requests of a transaction are all issued before anything is awaited, so no transaction
//! can auto-commit half-way on browsers that end it at the next task.

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbDatabase, IdbFactory, IdbKeyRange, IdbRequest, IdbTransaction, IdbTransactionMode,
};

use std::cell::RefCell;

use super::error::describe;
use crate::error::{Error, Result};
use crate::feedback::log::LoggedObservation;
use crate::model::{ModelSpec, TrainingHistory};
use crate::store::{self, Weights};
use crate::sync::{SyncRecord, SyncState, SyncStore};

const DB_NAME: &str = "tacit-rm";
/// 2 added the `sync` store; the upgrade only creates stores that are missing.
const DB_VERSION: u32 = 2;
const MODELS: &str = "models";
const OBSERVATIONS: &str = "observations";
const SYNC: &str = "sync";
const STORES: [&str; 3] = [MODELS, OBSERVATIONS, SYNC];
/// What a commit's error says when its observation's sequence number was already stored
/// (by another tab of the same model).
pub const SEQ_TAKEN: &str = "the observation's sequence number is already stored";

/// What `open` finds for a name.
pub struct Stored {
    pub spec: ModelSpec,
    pub weights: Vec<u8>,
    /// What `stats()` said of past training (none in a record stored before it was kept).
    pub history: TrainingHistory,
    pub log: Vec<LoggedObservation>,
    /// The sync state, if the model has one.
    pub sync: Option<SyncState>,
}

/// What one transaction writes (everything absent is left as it is).
#[derive(Default)]
pub struct Commit<'a> {
    /// The model record: spec, weights and the training history that goes with them.
    pub model: Option<(&'a ModelSpec, &'a [u8], TrainingHistory)>,
    /// An observation to store under a sequence number no entry has: another tab of the
    /// same model may have stored one under the same number, which must not be overwritten
    /// (the commit then fails with [`SEQ_TAKEN`] in its message and writes nothing).
    pub add: Option<&'a LoggedObservation>,
    /// Delete exactly these observations (the ones a training call trained on; entries
    /// another tab stored in between stay).
    pub drop: Option<&'a [u64]>,
    pub drop_all: bool,
    pub sync: Option<&'a SyncState>,
}

pub struct Storage {
    db: IdbDatabase,
}

fn storage_err(what: &str, e: &JsValue) -> Error {
    Error::Storage(format!("{what}: {}", describe(e)))
}

/// The global `indexedDB` of a window or a worker; `None` in node or where it is blocked.
pub fn factory() -> Option<IdbFactory> {
    let global = js_sys::global();
    let value = js_sys::Reflect::get(&global, &"indexedDB".into()).ok()?;
    if value.is_undefined() || value.is_null() {
        return None;
    }
    value.dyn_into::<IdbFactory>().ok()
}

/// Resolves with the request's result on `success`, rejects on `error`. Not an `async fn`:
/// the handlers must be attached now, when the request is made — a lazy future would attach
/// them only when first polled, after an earlier await, and miss an event that already fired.
fn settle(request: &IdbRequest) -> JsFuture {
    let req = request.clone();
    let promise = Promise::new(&mut |resolve, reject| {
        let req_ok = req.clone();
        let on_success = Closure::once_into_js(move || {
            let _ = resolve.call1(&JsValue::NULL, &req_ok.result().unwrap_or_default());
        });
        let req_err = req.clone();
        let on_error = Closure::once_into_js(move || {
            let err = req_err
                .error()
                .ok()
                .flatten()
                .map(JsValue::from)
                .unwrap_or_else(|| "request failed".into());
            let _ = reject.call1(&JsValue::NULL, &err);
        });
        req.set_onsuccess(Some(on_success.unchecked_ref()));
        req.set_onerror(Some(on_error.unchecked_ref()));
    });
    JsFuture::from(promise)
}

/// Resolves when the transaction has committed; rejects if it errors or aborts. Eager for the
/// same reason as [`settle`].
fn committed(tx: &IdbTransaction) -> JsFuture {
    let promise = Promise::new(&mut |resolve, reject| {
        let on_complete = Closure::once_into_js(move || {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let tx_err = tx.clone();
        let reject_abort = reject.clone();
        let tx_abort = tx.clone();
        let on_error = Closure::once_into_js(move |event: JsValue| {
            // A failed request's error (a ConstraintError, say) is on the event's target;
            // the transaction's own is set only once it has aborted.
            let from_request = js_sys::Reflect::get(&event, &"target".into())
                .and_then(|t| js_sys::Reflect::get(&t, &"error".into()))
                .ok()
                .filter(|e| !e.is_null() && !e.is_undefined());
            let err = from_request
                .or_else(|| tx_err.error().map(JsValue::from))
                .unwrap_or_else(|| "transaction failed".into());
            let _ = reject.call1(&JsValue::NULL, &err);
        });
        let on_abort = Closure::once_into_js(move || {
            let err = tx_abort
                .error()
                .map(JsValue::from)
                .unwrap_or_else(|| "transaction aborted".into());
            let _ = reject_abort.call1(&JsValue::NULL, &err);
        });
        tx.set_oncomplete(Some(on_complete.unchecked_ref()));
        tx.set_onerror(Some(on_error.unchecked_ref()));
        tx.set_onabort(Some(on_abort.unchecked_ref()));
    });
    JsFuture::from(promise)
}

fn key(name: &str, seq: u64) -> JsValue {
    Array::of2(&name.into(), &JsValue::from_f64(seq as f64)).into()
}

/// All observation keys of `name` up to and including `upto` (or all of them).
fn range(name: &str, upto: Option<u64>) -> Result<JsValue> {
    let hi = match upto {
        Some(s) => key(name, s),
        None => Array::of2(&name.into(), &JsValue::from_f64(f64::INFINITY)).into(),
    };
    IdbKeyRange::bound(&key(name, 0), &hi)
        .map(JsValue::from)
        .map_err(|e| storage_err("key range", &e))
}

/// `seqs` as inclusive runs of consecutive numbers, in order.
fn runs(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(s) => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn entry_value(entry: &LoggedObservation) -> Result<JsValue> {
    let json = serde_json::to_string(entry)
        .map_err(|e| Error::Storage(format!("encoding an observation: {e}")))?;
    let obj = js_sys::Object::new();
    js_sys::Reflect::set(&obj, &"entry".into(), &json.into())
        .map_err(|e| storage_err("observation record", &e))?;
    Ok(obj.into())
}

fn sync_value(state: &SyncState) -> Result<JsValue> {
    let record = state.to_record()?;
    let bodies = Array::new();
    for body in &record.bodies {
        bodies.push(&Uint8Array::from(&body[..]));
    }
    let obj = js_sys::Object::new();
    for (k, v) in [
        ("state", JsValue::from(record.state)),
        ("reference", Uint8Array::from(&record.reference[..]).into()),
        ("bodies", bodies.into()),
    ] {
        js_sys::Reflect::set(&obj, &k.into(), &v).map_err(|e| storage_err("sync record", &e))?;
    }
    Ok(obj.into())
}

fn sync_from_value(value: &JsValue) -> Result<SyncState> {
    let unreadable = || Error::Storage("the stored sync state is unreadable".into());
    let field = |k: &str| js_sys::Reflect::get(value, &k.into()).unwrap_or_default();
    let bytes = |v: JsValue| {
        v.dyn_into::<Uint8Array>()
            .map(|a| a.to_vec())
            .map_err(|_| unreadable())
    };
    let bodies = field("bodies");
    if !Array::is_array(&bodies) {
        return Err(unreadable());
    }
    SyncState::from_record(SyncRecord {
        state: field("state").as_string().ok_or_else(unreadable)?,
        reference: bytes(field("reference"))?,
        bodies: Array::from(&bodies)
            .iter()
            .map(bytes)
            .collect::<Result<_>>()?,
    })
}

fn model_value(spec: &ModelSpec, weights: &[u8], history: &TrainingHistory) -> Result<JsValue> {
    let json = serde_json::to_string(spec)
        .map_err(|e| Error::Storage(format!("encoding the model spec: {e}")))?;
    let history = serde_json::to_string(history)
        .map_err(|e| Error::Storage(format!("encoding the training history: {e}")))?;
    let obj = js_sys::Object::new();
    js_sys::Reflect::set(&obj, &"spec".into(), &json.into())
        .and_then(|_| {
            js_sys::Reflect::set(&obj, &"weights".into(), &Uint8Array::from(weights).into())
        })
        .and_then(|_| js_sys::Reflect::set(&obj, &"history".into(), &history.into()))
        .map_err(|e| storage_err("model record", &e))?;
    Ok(obj.into())
}

impl Storage {
    /// Opens (creating or upgrading) the database.
    pub async fn open(factory: &IdbFactory) -> Result<Storage> {
        let request = factory
            .open_with_u32(DB_NAME, DB_VERSION)
            .map_err(|e| storage_err("opening IndexedDB", &e))?;
        let req = request.clone();
        let on_upgrade = Closure::<dyn FnMut()>::new(move || {
            if let Ok(result) = req.result() {
                let db: IdbDatabase = result.unchecked_into();
                let names = db.object_store_names();
                for store in STORES {
                    if !names.contains(store) {
                        let _ = db.create_object_store(store);
                    }
                }
            }
        });
        request.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
        let result = settle(&request).await;
        request.set_onupgradeneeded(None);
        drop(on_upgrade);
        let db: IdbDatabase = result
            .map_err(|e| storage_err("opening IndexedDB", &e))?
            .unchecked_into();
        Ok(Storage { db })
    }

    fn transaction(&self, stores: &[&str], mode: IdbTransactionMode) -> Result<IdbTransaction> {
        let names = Array::new();
        for s in stores {
            names.push(&(*s).into());
        }
        self.db
            .transaction_with_str_sequence_and_mode(&names, mode)
            .map_err(|e| storage_err("starting a transaction", &e))
    }

    /// The stored model and its pending log, if `name` was saved before.
    pub async fn load(&self, name: &str) -> Result<Option<Stored>> {
        let tx = self.transaction(&STORES, IdbTransactionMode::Readonly)?;
        let store = |s| {
            tx.object_store(s)
                .map_err(|e| storage_err("object store", &e))
        };
        let model_req = store(MODELS)?
            .get(&name.into())
            .map_err(|e| storage_err("reading the model", &e))?;
        let log_req = store(OBSERVATIONS)?
            .get_all_with_key(&range(name, None)?)
            .map_err(|e| storage_err("reading the log", &e))?;
        let sync_req = store(SYNC)?
            .get(&name.into())
            .map_err(|e| storage_err("reading the sync state", &e))?;
        let (model_req, log_req, sync_req) =
            (settle(&model_req), settle(&log_req), settle(&sync_req));
        let model = model_req
            .await
            .map_err(|e| storage_err("reading the model", &e))?;
        let sync = sync_req
            .await
            .map_err(|e| storage_err("reading the sync state", &e))?;
        let log = log_req
            .await
            .map_err(|e| storage_err("reading the log", &e))?;
        if model.is_undefined() {
            return Ok(None);
        }
        let field = |k: &str| js_sys::Reflect::get(&model, &k.into()).unwrap_or_default();
        let spec: ModelSpec = field("spec")
            .as_string()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| {
                Error::CorruptWeights(format!("stored spec of '{name}' is unreadable"))
            })?;
        let weights = field("weights")
            .dyn_into::<Uint8Array>()
            .map_err(|_| {
                Error::CorruptWeights(format!("stored weights of '{name}' are not bytes"))
            })?
            .to_vec();
        let history = match field("history").as_string() {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                Error::Storage(format!(
                    "the training history of '{name}' is unreadable: {e}"
                ))
            })?,
            None => TrainingHistory::default(),
        };
        let mut entries = Vec::new();
        for record in Array::from(&log).iter() {
            let json = js_sys::Reflect::get(&record, &"entry".into())
                .ok()
                .and_then(|v| v.as_string())
                .ok_or_else(|| {
                    Error::Storage(format!("an observation of '{name}' is unreadable"))
                })?;
            entries.push(
                serde_json::from_str::<LoggedObservation>(&json)
                    .map_err(|e| Error::Storage(format!("an observation of '{name}': {e}")))?,
            );
        }
        Ok(Some(Stored {
            spec,
            weights,
            history,
            log: entries,
            sync: if sync.is_undefined() {
                None
            } else {
                Some(sync_from_value(&sync)?)
            },
        }))
    }

    /// Removes a model and its log.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let tx = self.transaction(&STORES, IdbTransactionMode::Readwrite)?;
        let run = || -> std::result::Result<(), JsValue> {
            tx.object_store(MODELS)?.delete(&name.into())?;
            tx.object_store(SYNC)?.delete(&name.into())?;
            tx.object_store(OBSERVATIONS)?
                .delete(&range(name, None).map_err(|e| JsValue::from(e.to_string()))?)?;
            Ok(())
        };
        run().map_err(|e| storage_err("deleting the model", &e))?;
        committed(&tx)
            .await
            .map(|_| ())
            .map_err(|e| storage_err("deleting the model", &e))
    }

    /// One read-write transaction over every store: what `commit` says, all or nothing.
    pub async fn commit(&self, name: &str, commit: Commit<'_>) -> Result<()> {
        let tx = self.transaction(&STORES, IdbTransactionMode::Readwrite)?;
        let issue = || -> Result<()> {
            let js = |e: JsValue| storage_err("writing", &e);
            if let Some((spec, weights, history)) = commit.model {
                tx.object_store(MODELS)
                    .map_err(js)?
                    .put_with_key(&model_value(spec, weights, &history)?, &name.into())
                    .map_err(js)?;
            }
            if let Some(sync) = commit.sync {
                tx.object_store(SYNC)
                    .map_err(js)?
                    .put_with_key(&sync_value(sync)?, &name.into())
                    .map_err(js)?;
            }
            let observations = tx.object_store(OBSERVATIONS).map_err(js)?;
            if commit.drop_all {
                observations.delete(&range(name, None)?).map_err(js)?;
            } else if let Some(seqs) = commit.drop {
                // One request per run of consecutive numbers (one run, in a single tab): a
                // run holds only the numbers it names, so another tab's entries stay.
                for (lo, hi) in runs(seqs) {
                    let run = IdbKeyRange::bound(&key(name, lo), &key(name, hi))
                        .map_err(|e| storage_err("key range", &e))?;
                    observations.delete(&run).map_err(js)?;
                }
            }
            if let Some(entry) = commit.add {
                // `add`, not `put`: a key another tab stored is a ConstraintError, not an
                // overwrite.
                observations
                    .add_with_key(&entry_value(entry)?, &key(name, entry.seq))
                    .map_err(js)?;
            }
            Ok(())
        };
        if let Err(e) = issue() {
            let _ = tx.abort();
            return Err(e);
        }
        committed(&tx).await.map(|_| ()).map_err(|e| {
            let taken = commit.add.is_some()
                && js_sys::Reflect::get(&e, &"name".into())
                    .ok()
                    .and_then(|n| n.as_string())
                    .is_some_and(|n| n == "ConstraintError");
            if taken {
                Error::Storage(format!("committing: {SEQ_TAKEN}"))
            } else {
                storage_err("committing", &e)
            }
        })
    }

    /// The largest sequence number stored for `name`'s observations (by any tab).
    pub async fn last_seq(&self, name: &str) -> Result<Option<u64>> {
        let tx = self.transaction(&[OBSERVATIONS], IdbTransactionMode::Readonly)?;
        let all = range(name, None)?;
        let req = tx
            .object_store(OBSERVATIONS)
            .and_then(|s| s.get_all_keys_with_key(&all))
            .map_err(|e| storage_err("reading the log's keys", &e))?;
        let keys = settle(&req)
            .await
            .map_err(|e| storage_err("reading the log's keys", &e))?;
        Ok(Array::from(&keys)
            .iter()
            .filter_map(|k| Array::from(&k).get(1).as_f64())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s as u64)
            .max())
    }

    pub fn close(&self) {
        self.db.close();
    }
}

/// The sync pass's store in the browser: IndexedDB when the model is persistent, and always
/// the model's in-memory copy of the state (what `train` adds its examples to), updated only
/// once IndexedDB has committed.
pub struct SyncStorage<'a> {
    pub storage: Option<&'a Storage>,
    pub name: &'a str,
    pub spec: &'a ModelSpec,
    /// Stored with rebased weights (a sync does not train; it keeps what `stats()` says).
    pub history: TrainingHistory,
    pub state: &'a RefCell<SyncState>,
}

impl SyncStore for SyncStorage<'_> {
    async fn load(&mut self) -> Result<Option<SyncState>> {
        Ok(Some(self.state.borrow().clone()))
    }

    async fn commit(&mut self, state: &SyncState, weights: Option<&Weights>) -> Result<()> {
        if let Some(s) = self.storage {
            let bytes = weights.map(store::to_bytes).transpose()?;
            let commit = Commit {
                model: bytes.as_deref().map(|b| (self.spec, b, self.history)),
                sync: Some(state),
                ..Commit::default()
            };
            s.commit(self.name, commit).await?;
        }
        *self.state.borrow_mut() = state.clone();
        Ok(())
    }
}
