//! Persistence in IndexedDB: one database `tacit-rm` with four object stores.
//!
//! - `models`, keyed by model name: `{ spec: string (JSON), weights: Uint8Array (safetensors),
//!   history: string (JSON of the training history `stats()` reports; absent in older records) }`.
//! - `observations`, keyed by `[name, seq]`: `{ entry: string (JSON of a logged observation) }`.
//! - `sync`, keyed by model name: the sync client's [`SyncState`] as its record
//!   `{ state: string (JSON), reference: Uint8Array, bodies: Uint8Array[] }`.
//! - `meta`, keyed by model name: `{ id: string, generation: number, spec: string (JSON),
//!   updatedAt: number (ms since the epoch) }`. `id` is drawn when the model is made, so a
//!   model deleted and made again under the same name is another model; `generation` counts
//!   the writes of the model and sync records. Every commit first reads this record in its
//!   own transaction and writes only if it is still the model the tab holds (else the model
//!   was deleted: [`Error::Closed`]) and, for a weight write, still the generation the tab
//!   read (else another tab wrote meanwhile); so a tab never re-creates a deleted model, stores
//!   an observation of one, or overwrites newer weights with a result computed from older ones.
//!   A tab checks the generation before it scores, when another instance announced a commit
//!   or a delete since its last check (`channel.rs`; before every score where there is no
//!   `BroadcastChannel`), and reloads when another tab stored newer weights (`mod.rs`);
//!   `list()` reads these small records, not the weights.
//!
//! Every commit is one transaction, and a call resolves only after its transaction's
//! `complete` event: an acknowledged observation is on disk, and "new weights + drop the
//! observations they were trained on" happens entirely or not at all. A page reload during
//! training therefore finds the last committed weights and every acknowledged observation.
//!
//! Requests of a transaction are all issued before anything is awaited, so no transaction
//! can auto-commit half-way on browsers that end it at the next task (a commit's writes are
//! issued from the success callback of its `meta` read, which keeps the transaction alive).
//!
//! Deleting the database (`RewardModel.deleteAll`, or the browser clearing the site's data)
//! fires `versionchange` at every open connection: each closes at once, so the deletion is
//! not blocked, and the models using it answer [`Error::Closed`] from then on.

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbDatabase, IdbFactory, IdbKeyRange, IdbRequest, IdbTransaction, IdbTransactionMode,
};

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::error::describe;
use crate::error::{Error, Result};
use crate::feedback::log::LoggedObservation;
use crate::model::{ModelSpec, TrainingHistory};
use crate::store::{self, Weights};
use crate::sync::{SyncRecord, SyncState, SyncStore};

const DB_NAME: &str = "tacit-rm";
/// 2 added the `sync` store, 3 the `meta` store; the upgrade only creates stores that are
/// missing (a model stored before `meta` gets its record when it is next opened).
const DB_VERSION: u32 = 3;
const MODELS: &str = "models";
const OBSERVATIONS: &str = "observations";
const SYNC: &str = "sync";
const META: &str = "meta";
const STORES: [&str; 4] = [MODELS, OBSERVATIONS, SYNC, META];
/// Why a model is closed when its stored records are gone.
pub const DELETED: &str =
    "it was deleted (RewardModel.delete, in this tab or another); open it again to start afresh";
/// Why, when the whole database is gone.
pub const DATABASE_DELETED: &str = "the database was deleted (RewardModel.deleteAll in this tab or another, or the site's data cleared); open it again to start afresh";
/// Why, when another tab upgraded the database to a newer version of the package.
pub const UPGRADED: &str =
    "another tab opened the database with a newer version of the package; reload the page";
const CLOSED: &str = "close() was called";
/// What a commit's error says when its model was created meanwhile by another tab.
pub const MODEL_EXISTS: &str = "another tab stored a model under this name meanwhile";
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
    /// The replay window stored with the weights (none in a record stored before it was
    /// kept).
    pub replay: Vec<LoggedObservation>,
    /// The sync state, if the model has one.
    pub sync: Option<SyncState>,
    /// Its `meta` record; none for a model stored before there was one.
    pub incarnation: Option<Incarnation>,
}

/// Which stored model a tab holds, and the generation of the records it last read or wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incarnation {
    pub id: String,
    pub generation: u64,
}

/// What a commit requires of the stored `meta` record before it writes anything.
pub enum Guard<'a> {
    /// No model of that name (a new model; or adopting a record stored before `meta`):
    /// written as generation 1 with this id and spec.
    Create { id: &'a str, spec: &'a ModelSpec },
    /// Still the model the tab holds (`id`; else it was deleted), and, when `generation` is
    /// given, not written since the tab read it.
    Same {
        id: &'a str,
        generation: Option<u64>,
    },
}

/// Why a guarded commit wrote nothing.
enum Refusal {
    Deleted,
    Exists,
    Stale,
    Failed(Error),
}

/// One stored model, as `list()` reports it.
pub struct Listed {
    pub name: String,
    pub spec: ModelSpec,
    pub pending: usize,
    /// When its weights (or sync state) were last stored; none for a model stored before
    /// `meta` and not opened since.
    pub updated_at: Option<f64>,
}

/// What one transaction writes (everything absent is left as it is).
#[derive(Default)]
pub struct Commit<'a> {
    /// The model record: spec, weights, the training history that goes with them and the
    /// replay window (the user's trained observations kept for later calls; see
    /// `RewardModel::replay`), written together.
    pub model: Option<(
        &'a ModelSpec,
        &'a [u8],
        TrainingHistory,
        &'a [LoggedObservation],
    )>,
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
    /// Set (with the reason) once the connection is closed: by `close`, or on `versionchange`.
    closed: Rc<Cell<Option<&'static str>>>,
    /// Kept alive as long as the connection: the `versionchange` handler.
    _on_versionchange: Closure<dyn FnMut(web_sys::IdbVersionChangeEvent)>,
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
    crate::math::sort_by(&mut sorted, u64::cmp);
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

fn model_value(
    spec: &ModelSpec,
    weights: &[u8],
    history: &TrainingHistory,
    replay: &[LoggedObservation],
) -> Result<JsValue> {
    let json = serde_json::to_string(spec)
        .map_err(|e| Error::Storage(format!("encoding the model spec: {e}")))?;
    let history = serde_json::to_string(history)
        .map_err(|e| Error::Storage(format!("encoding the training history: {e}")))?;
    let replay = serde_json::to_string(replay)
        .map_err(|e| Error::Storage(format!("encoding the replay window: {e}")))?;
    let obj = js_sys::Object::new();
    js_sys::Reflect::set(&obj, &"spec".into(), &json.into())
        .and_then(|_| {
            js_sys::Reflect::set(&obj, &"weights".into(), &Uint8Array::from(weights).into())
        })
        .and_then(|_| js_sys::Reflect::set(&obj, &"history".into(), &history.into()))
        .and_then(|_| js_sys::Reflect::set(&obj, &"replay".into(), &replay.into()))
        .map_err(|e| storage_err("model record", &e))?;
    Ok(obj.into())
}

/// A fresh random id for a new model (`crypto.randomUUID` where there is one).
pub fn new_id() -> String {
    let uuid = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())
        .ok()
        .and_then(|c| {
            let f = js_sys::Reflect::get(&c, &"randomUUID".into()).ok()?;
            f.dyn_into::<js_sys::Function>().ok()?.call0(&c).ok()
        })
        .and_then(|v| v.as_string());
    uuid.unwrap_or_else(|| {
        let r = || (js_sys::Math::random() * 2f64.powi(52)) as u64;
        format!("{:x}-{:x}-{:x}", js_sys::Date::now() as u64, r(), r())
    })
}

/// `(id, generation)` of a `meta` record.
fn meta_fields(record: &JsValue) -> Option<Incarnation> {
    let id = js_sys::Reflect::get(record, &"id".into())
        .ok()?
        .as_string()?;
    let generation = js_sys::Reflect::get(record, &"generation".into())
        .ok()?
        .as_f64()?;
    (generation.is_finite() && generation >= 0.0).then_some(Incarnation {
        id,
        generation: generation as u64,
    })
}

fn meta_value(id: &str, generation: u64, spec_json: &str) -> Result<JsValue> {
    let obj = js_sys::Object::new();
    for (k, v) in [
        ("id", JsValue::from(id)),
        ("generation", JsValue::from_f64(generation as f64)),
        ("spec", JsValue::from(spec_json)),
        ("updatedAt", JsValue::from_f64(js_sys::Date::now())),
    ] {
        js_sys::Reflect::set(&obj, &k.into(), &v).map_err(|e| storage_err("meta record", &e))?;
    }
    Ok(obj.into())
}

fn spec_json(spec: &ModelSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| Error::Storage(format!("encoding the model spec: {e}")))
}

/// Whether the package's database exists, without opening it (an open creates it); `None`
/// where the browser cannot say (no `indexedDB.databases()`).
pub async fn exists(factory: &IdbFactory) -> Result<Option<bool>> {
    let Some(list) = js_sys::Reflect::get(factory, &"databases".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
    else {
        return Ok(None);
    };
    let promise: Promise = list
        .call0(factory)
        .and_then(|p| p.dyn_into())
        .map_err(|e| storage_err("listing the databases", &e))?;
    let names = JsFuture::from(promise)
        .await
        .map_err(|e| storage_err("listing the databases", &e))?;
    Ok(Some(Array::from(&names).iter().any(|d| {
        js_sys::Reflect::get(&d, &"name".into())
            .ok()
            .and_then(|n| n.as_string())
            .is_some_and(|n| n == DB_NAME)
    })))
}

/// Deletes the whole database. Every open connection (of every tab) closes on the
/// `versionchange` this fires, so it is not blocked by this package's own connections; one of
/// an older version of the package (before it closed on `versionchange`) delays it until that
/// tab closes.
pub async fn delete_database(factory: &IdbFactory) -> Result<()> {
    let request = factory
        .delete_database(DB_NAME)
        .map_err(|e| storage_err("deleting the database", &e))?;
    settle(&request)
        .await
        .map(|_| ())
        .map_err(|e| storage_err("deleting the database", &e))
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
        let closed = Rc::new(Cell::new(None));
        let (db_c, closed_c) = (db.clone(), closed.clone());
        let on_versionchange = Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new(
            move |event: web_sys::IdbVersionChangeEvent| {
                // Closing now is what lets the other tab's deletion (or upgrade) go ahead;
                // from here on this connection refuses every call.
                db_c.close();
                let reason = match event.new_version() {
                    None => DATABASE_DELETED,
                    Some(_) => UPGRADED,
                };
                closed_c.set(Some(reason));
            },
        );
        db.set_onversionchange(Some(on_versionchange.as_ref().unchecked_ref()));
        Ok(Storage {
            db,
            closed,
            _on_versionchange: on_versionchange,
        })
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<&'static str> {
        self.closed.get()
    }

    fn check_open(&self) -> Result<()> {
        match self.closed.get() {
            Some(reason) => Err(Error::Closed(reason)),
            None => Ok(()),
        }
    }

    fn transaction(&self, stores: &[&str], mode: IdbTransactionMode) -> Result<IdbTransaction> {
        self.check_open()?;
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
        let meta_req = store(META)?
            .get(&name.into())
            .map_err(|e| storage_err("reading the model's meta record", &e))?;
        let (model_req, log_req, sync_req, meta_req) = (
            settle(&model_req),
            settle(&log_req),
            settle(&sync_req),
            settle(&meta_req),
        );
        let model = model_req
            .await
            .map_err(|e| storage_err("reading the model", &e))?;
        let sync = sync_req
            .await
            .map_err(|e| storage_err("reading the sync state", &e))?;
        let log = log_req
            .await
            .map_err(|e| storage_err("reading the log", &e))?;
        let meta = meta_req
            .await
            .map_err(|e| storage_err("reading the model's meta record", &e))?;
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
        let replay = match field("replay").as_string() {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                Error::Storage(format!("the replay window of '{name}' is unreadable: {e}"))
            })?,
            None => Vec::new(),
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
            replay,
            sync: if sync.is_undefined() {
                None
            } else {
                Some(sync_from_value(&sync)?)
            },
            incarnation: meta_fields(&meta),
        }))
    }

    /// The `meta` record of `name`: which model is stored under it, at which generation.
    pub async fn incarnation(&self, name: &str) -> Result<Option<Incarnation>> {
        let tx = self.transaction(&[META], IdbTransactionMode::Readonly)?;
        let req = tx
            .object_store(META)
            .and_then(|s| s.get(&name.into()))
            .map_err(|e| storage_err("reading the model's meta record", &e))?;
        let record = settle(&req)
            .await
            .map_err(|e| storage_err("reading the model's meta record", &e))?;
        Ok(meta_fields(&record))
    }

    /// Every stored model: its spec (from `meta`, or from the model record of one stored
    /// before `meta`), its pending observations and when it was last written.
    pub async fn list(&self) -> Result<Vec<Listed>> {
        let tx = self.transaction(&STORES, IdbTransactionMode::Readonly)?;
        let store = |s| {
            tx.object_store(s)
                .map_err(|e| storage_err("object store", &e))
        };
        let js = |e: JsValue| storage_err("listing the models", &e);
        let names = store(MODELS)?.get_all_keys().map_err(js)?;
        let meta_keys = store(META)?.get_all_keys().map_err(js)?;
        let metas = store(META)?.get_all().map_err(js)?;
        let logged = store(OBSERVATIONS)?.get_all_keys().map_err(js)?;
        let (names, meta_keys, metas, logged) = (
            settle(&names),
            settle(&meta_keys),
            settle(&metas),
            settle(&logged),
        );
        let names = names.await.map_err(js)?;
        let meta_keys = meta_keys.await.map_err(js)?;
        let metas = metas.await.map_err(js)?;
        let logged = logged.await.map_err(js)?;
        let mut pending = std::collections::HashMap::<String, usize>::new();
        for key in Array::from(&logged).iter() {
            if let Some(n) = Array::from(&key).get(0).as_string() {
                *pending.entry(n).or_default() += 1;
            }
        }
        let meta: std::collections::HashMap<String, JsValue> = Array::from(&meta_keys)
            .iter()
            .zip(Array::from(&metas).iter())
            .filter_map(|(k, v)| Some((k.as_string()?, v)))
            .collect();
        let mut out = Vec::new();
        for name in Array::from(&names).iter().filter_map(|n| n.as_string()) {
            let record = meta.get(&name);
            let field = |k: &str| record.and_then(|r| js_sys::Reflect::get(r, &k.into()).ok());
            let spec = match field("spec").and_then(|s| s.as_string()) {
                Some(json) => serde_json::from_str(&json).ok(),
                None => None,
            };
            let spec = match spec {
                Some(spec) => spec,
                // Stored before `meta`: the spec is in the model record.
                None => match self.load(&name).await? {
                    Some(stored) => stored.spec,
                    None => continue,
                },
            };
            out.push(Listed {
                pending: pending.get(&name).copied().unwrap_or(0),
                updated_at: field("updatedAt").and_then(|v| v.as_f64()),
                name,
                spec,
            });
        }
        Ok(out)
    }

    /// Removes a model: its record, log, sync state and `meta` record, in one transaction.
    /// Resolves with the id its `meta` record held (none for a model stored before `meta`, or
    /// none stored): the model the other tabs are told is gone.
    pub async fn delete(&self, name: &str) -> Result<Option<String>> {
        let tx = self.transaction(&STORES, IdbTransactionMode::Readwrite)?;
        // Requests of one transaction run in order: this reads the record the delete removes.
        let read = tx
            .object_store(META)
            .and_then(|s| s.get(&name.into()))
            .map_err(|e| storage_err("reading the model's meta record", &e))?;
        let meta = settle(&read);
        let run = || -> std::result::Result<(), JsValue> {
            tx.object_store(MODELS)?.delete(&name.into())?;
            tx.object_store(SYNC)?.delete(&name.into())?;
            tx.object_store(META)?.delete(&name.into())?;
            tx.object_store(OBSERVATIONS)?
                .delete(&range(name, None).map_err(|e| JsValue::from(e.to_string()))?)?;
            Ok(())
        };
        run().map_err(|e| storage_err("deleting the model", &e))?;
        committed(&tx)
            .await
            .map_err(|e| storage_err("deleting the model", &e))?;
        Ok(meta.await.ok().as_ref().and_then(meta_fields).map(|i| i.id))
    }

    /// One read-write transaction over every store: what `commit` says, all or nothing, and
    /// only if the stored `meta` record passes `guard` (read in the same transaction, so no
    /// other tab's commit can come between the check and the writes). Resolves with the
    /// generation the model is at afterwards.
    pub async fn commit(&self, name: &str, guard: Guard<'_>, commit: Commit<'_>) -> Result<u64> {
        // Every value is made before the transaction starts: the writes are issued from the
        // `meta` read's success callback, where nothing can fail half-way to encode.
        let model = commit
            .model
            .map(|(spec, weights, history, replay)| model_value(spec, weights, &history, replay))
            .transpose()?;
        let sync = commit.sync.map(sync_value).transpose()?;
        let add = match commit.add {
            Some(entry) => Some((key(name, entry.seq), entry_value(entry)?)),
            None => None,
        };
        let mut drops = Vec::new();
        if commit.drop_all {
            drops.push(range(name, None)?);
        } else if let Some(seqs) = commit.drop {
            // One request per run of consecutive numbers (one run, in a single tab): a run
            // holds only the numbers it names, so another tab's entries stay.
            for (lo, hi) in runs(seqs) {
                drops.push(
                    IdbKeyRange::bound(&key(name, lo), &key(name, hi))
                        .map(JsValue::from)
                        .map_err(|e| storage_err("key range", &e))?,
                );
            }
        }
        let (want_id, want_generation, created_spec) = match guard {
            Guard::Create { id, spec } => (id.to_string(), None, Some(spec_json(spec)?)),
            Guard::Same { id, generation } => (id.to_string(), generation, None),
        };
        // The model and sync records are what other tabs reload: writing either is a new
        // generation. Observations are not (each tab's are its own records).
        let bumps = created_spec.is_some() || model.is_some() || sync.is_some();

        let tx = self.transaction(&STORES, IdbTransactionMode::Readwrite)?;
        let read = tx
            .object_store(META)
            .and_then(|s| s.get(&name.into()))
            .map_err(|e| storage_err("reading the model's meta record", &e))?;
        let refusal: Rc<RefCell<Option<Refusal>>> = Rc::new(RefCell::new(None));
        let generation = Rc::new(Cell::new(0u64));
        let (tx_c, read_c, refusal_c, generation_c) = (
            tx.clone(),
            read.clone(),
            refusal.clone(),
            generation.clone(),
        );
        let name_js = JsValue::from(name);
        let on_read = Closure::once_into_js(move || {
            let issue = || -> std::result::Result<(), Refusal> {
                let current = read_c.result().ok().filter(|v| !v.is_undefined());
                let stored = current.as_ref().and_then(meta_fields);
                let next = match (&created_spec, &stored) {
                    (Some(_), Some(_)) => return Err(Refusal::Exists),
                    (Some(_), None) => 1,
                    (None, None) => return Err(Refusal::Deleted),
                    (None, Some(s)) if s.id != want_id => return Err(Refusal::Deleted),
                    (None, Some(s)) if want_generation.is_some_and(|g| g != s.generation) => {
                        return Err(Refusal::Stale)
                    }
                    (None, Some(s)) if bumps => s.generation + 1,
                    (None, Some(s)) => s.generation,
                };
                generation_c.set(next);
                let failed = |e: JsValue| Refusal::Failed(storage_err("writing", &e));
                let store = |s: &str| tx_c.object_store(s).map_err(failed);
                if bumps {
                    let spec = match (&created_spec, &current) {
                        (Some(json), _) => json.clone(),
                        (None, Some(record)) => js_sys::Reflect::get(record, &"spec".into())
                            .ok()
                            .and_then(|v| v.as_string())
                            .unwrap_or_default(),
                        (None, None) => String::new(),
                    };
                    let record = meta_value(&want_id, next, &spec).map_err(Refusal::Failed)?;
                    store(META)?
                        .put_with_key(&record, &name_js)
                        .map_err(failed)?;
                }
                if let Some(model) = &model {
                    store(MODELS)?
                        .put_with_key(model, &name_js)
                        .map_err(failed)?;
                }
                if let Some(sync) = &sync {
                    store(SYNC)?.put_with_key(sync, &name_js).map_err(failed)?;
                }
                let observations = store(OBSERVATIONS)?;
                for range in &drops {
                    observations.delete(range).map_err(failed)?;
                }
                if let Some((key, value)) = &add {
                    // `add`, not `put`: a key another tab stored is a ConstraintError, not an
                    // overwrite.
                    observations.add_with_key(value, key).map_err(failed)?;
                }
                Ok(())
            };
            if let Err(r) = issue() {
                *refusal_c.borrow_mut() = Some(r);
                let _ = tx_c.abort();
            }
        });
        read.set_onsuccess(Some(on_read.unchecked_ref()));
        let done = committed(&tx).await;
        if let Some(r) = refusal.borrow_mut().take() {
            return Err(match r {
                Refusal::Deleted => Error::Closed(DELETED),
                Refusal::Exists => Error::Storage(format!("committing: {MODEL_EXISTS}")),
                Refusal::Stale => Error::Busy(
                    "another tab stored this model since this tab read it: nothing was stored \
                     (the next call starts from what that tab stored)"
                        .into(),
                ),
                Refusal::Failed(e) => e,
            });
        }
        done.map(|_| generation.get()).map_err(|e| {
            let taken = commit.add.is_some()
                && js_sys::Reflect::get(&e, &"name".into())
                    .ok()
                    .and_then(|n| n.as_string())
                    .is_some_and(|n| n == "ConstraintError");
            if taken {
                Error::Storage(format!("committing: {SEQ_TAKEN}"))
            } else if let Some(reason) = self.closed.get() {
                // The connection closed under the transaction (another tab deleted the
                // database): that, not the abort, is what the caller must hear.
                Error::Closed(reason)
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
        self.db.set_onversionchange(None);
        self.db.close();
        if self.closed.get().is_none() {
            self.closed.set(Some(CLOSED));
        }
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
    /// Stored with rebased weights too (the user's, kept on the device: never sent).
    pub replay: Vec<LoggedObservation>,
    pub state: &'a RefCell<SyncState>,
    /// The stored model the tab holds (`Some` when `storage` is): each write is guarded by
    /// it and moves it to the generation written.
    pub stored_as: &'a RefCell<Option<Incarnation>>,
    /// Where the other instances hear of each write (`channel.rs`).
    pub channel: Option<&'a super::channel::Channel>,
}

impl SyncStore for SyncStorage<'_> {
    async fn load(&mut self) -> Result<Option<SyncState>> {
        Ok(Some(self.state.borrow().clone()))
    }

    async fn commit(&mut self, state: &SyncState, weights: Option<&Weights>) -> Result<()> {
        if let Some(s) = self.storage {
            let bytes = weights.map(store::to_bytes).transpose()?;
            let commit = Commit {
                model: bytes
                    .as_deref()
                    .map(|b| (self.spec, b, self.history, &self.replay[..])),
                sync: Some(state),
                ..Commit::default()
            };
            let held = self.stored_as.borrow().clone();
            let Some(held) = held else {
                return Err(Error::Closed(DELETED));
            };
            let guard = Guard::Same {
                id: &held.id,
                generation: Some(held.generation),
            };
            let generation = s.commit(self.name, guard, commit).await?;
            if let Some(c) = self.channel {
                if generation != held.generation {
                    c.announce_commit(&held.id, generation);
                }
            }
            *self.stored_as.borrow_mut() = Some(Incarnation { generation, ..held });
        }
        *self.state.borrow_mut() = state.clone();
        Ok(())
    }
}
