//! The browser package's surface (wasm-bindgen): `RewardModel` and `featurize`. Only
//! conversions, persistence calls and error mapping live here; the logic is in
//! [`crate::model`].
//!
//! Every method that touches the GPU or IndexedDB returns a Promise; every failure is a
//! rejected Promise (or a thrown error for the synchronous getters) carrying a `TacitError`
//! with a stable `code`. Nothing here panics: a `RefCell` borrow is never held across an
//! `await` or a call into JS, so re-entrant calls from callbacks cannot trip it.

mod backend;
mod channel;
mod error;
mod lock;
mod options;
mod origin;
mod storage;
mod sync;
mod types;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::rc::Rc;

use js_sys::{Float32Array, Promise, Uint32Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::backend::Device;
use crate::error::{Error, Result};
use crate::model::{self, ModelSpec, RewardModel as Model, TrainingHistory};
use crate::personal::{Personal, Personalization};
use crate::store;
use crate::sync::{PassOptions, SyncState};
use crate::trainer;
use error::to_js;
use options::{
    float_array, parse_observation, parse_train, to_js as result_to_js, OpenOptions, ScoreOptions,
    TrainResult,
};
use storage::{Commit, Guard, Incarnation, Storage, Stored, SyncStorage};
use sync::{BrowserClock, FetchTransport, SyncOptions, SyncResult};

/// A reward model in the page (or worker): see the package README.
#[wasm_bindgen]
pub struct RewardModel {
    inner: Rc<Inner>,
}

struct Inner {
    name: String,
    spec: ModelSpec,
    storage: Option<Storage>,
    state: RefCell<State>,
    /// The sync client's state, as last stored.
    sync: RefCell<SyncState>,
    /// Which stored model this tab holds and the generation of what it holds in memory
    /// (`Some` exactly when `storage` is; see `storage.rs`).
    stored_as: RefCell<Option<Incarnation>>,
    /// Writing calls of this tab holding the model's lock now. While one runs, no other tab
    /// writes the model, so scoring calls meanwhile skip the staleness check (and must not
    /// reload the model under the writer).
    writing: Cell<u32>,
    /// Sequence numbers of observations this tab is storing (in memory, not yet committed):
    /// a reload from IndexedDB keeps them.
    in_flight: RefCell<BTreeSet<u64>>,
    /// What the other instances of the model announce (a persistent model where there is a
    /// `BroadcastChannel`): the scoring calls read the `meta` record only after a message.
    channel: Option<channel::Channel>,
}

struct State {
    /// `None` once closed, with the reason in `closed`.
    model: Option<Model>,
    closed: &'static str,
    /// A `train`, `sync`, `importWeights`, `reset` or `forget` call is running (each moves
    /// the weights; one at a time in a tab, and across tabs under the model's lock).
    busy: Option<&'static str>,
}

/// Clears the busy flag however a weight-moving call ends.
struct BusyGuard<'a>(&'a Inner);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.try_borrow_mut() {
            st.busy = None;
        }
    }
}

/// A writing call's hold on the model across tabs: the Web Lock (where there are Web Locks)
/// and this tab's `writing` count, both released when it drops.
struct Writing<'a> {
    inner: &'a Inner,
    _lock: Option<lock::Held>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.inner
            .writing
            .set(self.inner.writing.get().saturating_sub(1));
    }
}

impl Inner {
    /// Runs `f` on the open model, without holding the borrow beyond it. A model whose
    /// database another tab deleted is closed here, so that the synchronous calls say so too.
    fn with<T>(&self, f: impl FnOnce(&mut Model) -> Result<T>) -> Result<T> {
        if let Some(reason) = self.storage.as_ref().and_then(Storage::closed) {
            self.close_model(reason);
        }
        if self.deleted_elsewhere() {
            self.close_model(storage::DELETED);
        }
        let mut st = self
            .state
            .try_borrow_mut()
            .map_err(|_| Error::Busy("the model is in use by another call".into()))?;
        let closed = st.closed;
        f(st.model.as_mut().ok_or(Error::Closed(closed))?)
    }

    /// Whether a delete message named the stored model this instance holds (one borrow and a
    /// look at a list that is empty unless a delete was announced: cheap enough for every call).
    fn deleted_elsewhere(&self) -> bool {
        let Some(c) = &self.channel else {
            return false;
        };
        self.stored_as
            .try_borrow()
            .ok()
            .and_then(|held| held.as_ref().map(|h| c.deleted(&h.id)))
            .unwrap_or(false)
    }

    /// Drops the model from memory and closes the database handle: every later call is
    /// `closed` with `reason`.
    fn close_model(&self, reason: &'static str) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            if st.model.take().is_some() {
                st.closed = reason;
            }
        }
        if let Some(s) = &self.storage {
            if s.closed().is_none() {
                s.close();
            }
        }
    }

    /// `e`, after closing the model if it says the model is gone.
    fn closing(&self, e: Error) -> Error {
        if let Error::Closed(reason) = e {
            self.close_model(reason);
        }
        e
    }

    /// `e` of a write that stored nothing: perhaps refused because another tab stored newer
    /// weights, so the next scoring call reads what is stored without waiting to hear of it.
    fn failed_write(&self, e: Error) -> Error {
        if let Some(c) = &self.channel {
            c.recheck();
        }
        self.closing(e)
    }

    /// Marks the model busy with `call` (one weight-moving call at a time in a tab) until the
    /// guard drops.
    fn begin(&self, call: &'static str) -> Result<BusyGuard<'_>> {
        self.with(|_| Ok(()))?;
        let mut st = self
            .state
            .try_borrow_mut()
            .map_err(|_| Error::Busy("the model is in use by another call".into()))?;
        if let Some(running) = st.busy {
            return Err(Error::Busy(format!("a {running} call is already running")));
        }
        st.busy = Some(call);
        Ok(BusyGuard(self))
    }

    /// Takes the model's lock across tabs (waiting for another tab's writing call to end),
    /// then brings the model up to what is stored: a writing call starts from the stored
    /// weights, sync state and every pending observation of every tab.
    async fn write(&self) -> Result<Writing<'_>> {
        let lock = match &self.storage {
            Some(_) => lock::acquire(&self.name).await?,
            None => None,
        };
        self.writing.set(self.writing.get() + 1);
        let writing = Writing {
            inner: self,
            _lock: lock,
        };
        // The reload reads everything stored: what was announced until now is accounted for.
        if let Some(c) = &self.channel {
            c.checking();
        }
        if let Err(e) = self.reload().await {
            if let Some(c) = &self.channel {
                c.recheck();
            }
            return Err(e);
        }
        Ok(writing)
    }

    /// Before a reading call: reloads the model if another tab stored a newer generation,
    /// and fails with `closed` if it was deleted. With a channel (`channel.rs`), only after
    /// another instance announced a commit or a delete since the last read: in the steady
    /// state a score touches no IndexedDB. Without one, one small IndexedDB read every call.
    /// Nothing while this tab itself is writing (no other tab can be).
    async fn refresh(&self) -> Result<()> {
        self.with(|_| Ok(()))?;
        if self.storage.is_none() || self.writing.get() > 0 {
            return Ok(());
        }
        if let Some(c) = &self.channel {
            if !c.stale() {
                return Ok(());
            }
            // Before the read: a message that arrives during it makes the next call read again.
            c.checking();
        }
        let checked = self.check_stored().await;
        if let (Err(_), Some(c)) = (&checked, &self.channel) {
            c.recheck();
        }
        checked
    }

    /// Reads the `meta` record; reloads if another tab stored a newer generation.
    async fn check_stored(&self) -> Result<()> {
        let (Some(s), Some(held)) = (&self.storage, self.stored_as.borrow().clone()) else {
            return Ok(());
        };
        match s
            .incarnation(&self.name)
            .await
            .map_err(|e| self.closing(e))?
        {
            Some(now) if now == held => Ok(()),
            Some(now) if now.id == held.id => self.reload().await,
            _ => Err(self.closing(Error::Closed(storage::DELETED))),
        }
    }

    /// Replaces the model in memory with the stored one (weights, history, sync state,
    /// pending log, plus the observations this tab is storing), keeping its device.
    async fn reload(&self) -> Result<()> {
        let (Some(s), Some(held)) = (&self.storage, self.stored_as.borrow().clone()) else {
            return self.with(|_| Ok(()));
        };
        let stored = s.load(&self.name).await.map_err(|e| self.closing(e))?;
        let Some(mut stored) =
            stored.filter(|st| st.incarnation.as_ref().is_some_and(|i| i.id == held.id))
        else {
            return Err(self.closing(Error::Closed(storage::DELETED)));
        };
        let incarnation = stored.incarnation.clone();
        let (device, placement, served) = self.with(|m| {
            let in_flight = self.in_flight.borrow();
            let stored_seqs: BTreeSet<u64> = stored.log.iter().map(|e| e.seq).collect();
            stored.log.extend(
                m.pending()
                    .iter()
                    .filter(|e| in_flight.contains(&e.seq) && !stored_seqs.contains(&e.seq))
                    .cloned(),
            );
            Ok((m.device().clone(), m.placement(), m.stats().last_score))
        })?;
        let (mut model, sync) = restore(&self.spec, stored, device)?;
        model.set_placement(placement);
        if let Some(served) = served {
            model.note_served(served);
        }
        self.with(|m| {
            *m = model;
            Ok(())
        })?;
        *self.sync.borrow_mut() = sync;
        *self.stored_as.borrow_mut() = incarnation;
        Ok(())
    }

    /// Stores `commit` if the model is still the one this tab holds, at the generation it
    /// holds, and moves this tab to the generation written (a persistent model only).
    async fn store(&self, commit: Commit<'_>) -> Result<()> {
        let Some(s) = &self.storage else {
            return Ok(());
        };
        let held = self
            .stored_as
            .borrow()
            .clone()
            .ok_or(Error::Closed(storage::DELETED))?;
        let guard = Guard::Same {
            id: &held.id,
            generation: Some(held.generation),
        };
        let generation = s
            .commit(&self.name, guard, commit)
            .await
            .map_err(|e| self.failed_write(e))?;
        announce(self.channel.as_ref(), &held, generation);
        *self.stored_as.borrow_mut() = Some(Incarnation { generation, ..held });
        Ok(())
    }

    async fn score(&self, embeddings: &JsValue, options: JsValue) -> Result<Vec<f32>> {
        let options = ScoreOptions::parse(options)?;
        let flat = float_array(embeddings, "embeddings")?;
        self.refresh().await?;
        let (device, placement, head, personal) = self.with(|m| {
            let w = m.weights();
            Ok((
                m.device().clone(),
                m.placement(),
                w.head.clone(),
                w.personal.clone(),
            ))
        })?;
        let x = model::embeddings(head.config.dim, &flat)?;
        // `auto` places the call (a chat turn's few candidates on the CPU path); a lost GPU
        // scores on the CPU (the weights are not lost with it), and the model moves there
        // for good.
        let scored = model::score_on(
            &device,
            placement,
            &head,
            personal.as_ref(),
            x,
            options.shared_only,
        )
        .await;
        self.with(|m| {
            if device.is_lost() {
                m.set_device(Device::Cpu);
            }
            if let Ok((_, served)) = &scored {
                m.note_served(*served);
            }
            Ok(())
        })?;
        scored.map(|(s, _)| s)
    }

    async fn observe(&self, observation: JsValue) -> Result<u64> {
        let parsed = parse_observation(observation)?;
        let mut entry = self.with(|m| m.observe(parsed.clone()))?;
        let (Some(s), Some(held)) = (&self.storage, self.stored_as.borrow().clone()) else {
            return Ok(entry.seq);
        };
        // Stored only while the model is still the one this tab holds (not deleted by
        // another tab); another tab's weight writes do not matter to an observation.
        let guard = || Guard::Same {
            id: &held.id,
            generation: None,
        };
        // Another tab of the same model stores its observations in the same log: when it
        // took this sequence number first, move past every stored one and store again
        // (a few tries: tabs may race), never over its entry.
        for attempt in 0..4 {
            let commit = Commit {
                add: Some(&entry),
                ..Commit::default()
            };
            self.in_flight.borrow_mut().insert(entry.seq);
            let stored = s.commit(&self.name, guard(), commit).await;
            self.in_flight.borrow_mut().remove(&entry.seq);
            let Err(e) = stored else {
                return Ok(entry.seq);
            };
            // Not stored, so not acknowledged: take it back out of the pending log.
            let _ = self.with(|m| {
                m.unobserve(entry.seq);
                Ok(())
            });
            let taken = matches!(&e, Error::Storage(m) if m.contains(storage::SEQ_TAKEN));
            if !taken || attempt == 3 {
                return Err(self.closing(e));
            }
            let last = s.last_seq(&self.name).await.map_err(|e| self.closing(e))?;
            entry = self.with(|m| {
                if let Some(last) = last {
                    m.skip_seq_past(last);
                }
                m.observe(parsed.clone())
            })?;
        }
        Err(Error::Storage(format!(
            "committing: {} (other tabs kept taking the next one)",
            storage::SEQ_TAKEN
        )))
    }

    async fn train(&self, options: JsValue) -> Result<TrainResult> {
        let (opts, on_progress) = parse_train(options)?;
        let _busy = self.begin("train")?;
        // One tab trains the model at a time; this one starts from what is stored (another
        // tab's weights, and every tab's pending observations).
        let _writing = self.write().await?;
        let job = self.with(|m| m.prepare_training(&opts))?;
        let mut thrown: Option<JsValue> = None;
        let mut progress = |r: &trainer::EpochReport| {
            let Some(f) = &on_progress else {
                return ControlFlow::Continue(());
            };
            let Ok(event) = result_to_js(&options::ProgressEvent::from(r)) else {
                return ControlFlow::Continue(());
            };
            match f.call1(&JsValue::NULL, &event) {
                Ok(v) if v == JsValue::FALSE => ControlFlow::Break(()),
                Ok(_) => ControlFlow::Continue(()),
                Err(e) => {
                    thrown = Some(e);
                    ControlFlow::Break(())
                }
            }
        };
        let outcome = job.run(&mut progress, yield_to_host).await?;
        if let Some(e) = thrown {
            return Err(Error::InvalidConfig(format!(
                "onProgress threw: {}",
                error::describe(&e)
            )));
        }
        // Persist first, apply after: a failed write leaves memory and disk as they were.
        let (bytes, history) =
            self.with(|m| Ok((m.trained_bytes(&outcome)?, m.history_after(&outcome))))?;
        let mut sync = self.sync.borrow().clone();
        sync.unsynced_examples += outcome.examples() as u64;
        self.store(Commit {
            model: Some((&self.spec, &bytes, history, outcome.replay())),
            drop: Some(&outcome.trained_seqs),
            sync: Some(&sync),
            ..Commit::default()
        })
        .await?;
        *self.sync.borrow_mut() = sync;
        self.with(|m| {
            m.apply(&outcome);
            if outcome.report.fell_back_to_cpu {
                m.set_device(Device::Cpu);
            }
            Ok(())
        })?;
        Ok(TrainResult::new(
            outcome.objective(),
            outcome.examples(),
            &outcome.report,
        ))
    }

    /// Stores the spec with the window it now keeps (`open` with a new `replayTurns`: the
    /// window was trimmed to it), so that a reload opens with what this tab uses even before
    /// its next write.
    async fn store_window_size(&self) -> Result<()> {
        let _writing = self.write().await?;
        let (bytes, history, replay) =
            self.with(|m| Ok((m.export_weights()?, m.history(), m.replay().to_vec())))?;
        self.store(Commit {
            model: Some((&self.spec, &bytes, history, &replay)),
            ..Commit::default()
        })
        .await
    }

    /// Refused with `busy` while a `train` or `sync` runs (either would overwrite the
    /// imported weights when it finishes), and marks the model busy while it stores them.
    async fn import_weights(&self, bytes: &JsValue) -> Result<()> {
        let bytes = bytes
            .dyn_ref::<Uint8Array>()
            .ok_or_else(|| Error::CorruptWeights("weights must be a Uint8Array".into()))?
            .to_vec();
        let _busy = self.begin("importWeights")?;
        let _writing = self.write().await?;
        // What is stored is what will be installed (the user's personal part kept).
        let (weights, history, replay) =
            self.with(|m| Ok((m.importable(&bytes)?, m.history(), m.replay().to_vec())))?;
        let bytes = store::to_bytes(&weights)?;
        self.store(Commit {
            model: Some((&self.spec, &bytes, history, &replay)),
            ..Commit::default()
        })
        .await?;
        self.with(|m| m.replace_weights(weights))
    }

    /// The one sync pass (`crate::sync::pass`) with `fetch`, the browser clock and IndexedDB.
    async fn sync(&self, options: JsValue) -> Result<SyncResult> {
        let opts: SyncOptions = options::strict(options, "sync options")?;
        let config = opts.config(&self.name)?;
        let _busy = self.begin("sync")?;
        let _writing = self.write().await?;
        let weights = self.with(|m| Ok(m.weights().clone()))?;
        let mut transport = FetchTransport {
            base_url: opts.url.clone(),
            timeout_ms: opts.timeout_ms.unwrap_or(15_000),
        };
        let mut store = SyncStorage {
            storage: self.storage.as_ref(),
            name: &self.name,
            spec: &self.spec,
            history: self.with(|m| Ok(m.history()))?,
            replay: self.with(|m| Ok(m.replay().to_vec()))?,
            state: &self.sync,
            stored_as: &self.stored_as,
            channel: self.channel.as_ref(),
        };
        let pass = PassOptions {
            retry_budget_ms: u64::from(opts.retry_budget_ms.unwrap_or(3_000)),
            fallback_objective: self.spec.objective,
            secure: opts.session(),
        };
        let report = crate::sync::pass::sync(
            config,
            &weights,
            pass,
            &mut transport,
            &BrowserClock,
            &mut store,
        )
        .await
        .map_err(|e| self.failed_write(e))?;
        if let Some(rebased) = report.rebased.clone() {
            self.with(|m| m.replace_weights(rebased))?;
        }
        Ok(SyncResult::from(&report))
    }

    async fn reset(&self) -> Result<()> {
        let _busy = self.begin("reset")?;
        let _writing = self.write().await?;
        let fresh = Model::new(&self.spec, Device::Cpu)?;
        let bytes = fresh.export_weights()?;
        // Starting over starts sync over too: the fresh weights are the new reference.
        let sync = SyncState::fresh(fresh.weights().clone());
        self.store_replacing(&bytes, &sync).await?;
        *self.sync.borrow_mut() = sync;
        self.with(|m| {
            let (device, placement) = (m.device().clone(), m.placement());
            *m = Model::new(&self.spec, device)?;
            m.set_placement(placement);
            Ok(())
        })
    }

    /// Stores new weights and sync state and drops every pending observation, in one
    /// transaction (`reset` and `forget`).
    async fn store_replacing(&self, weights: &[u8], sync: &SyncState) -> Result<()> {
        // Starting over (reset) or forgetting the user ends the training history and the
        // replay window too.
        self.store(Commit {
            model: Some((&self.spec, weights, TrainingHistory::default(), &[])),
            drop_all: true,
            sync: Some(sync),
            ..Commit::default()
        })
        .await
    }

    /// Forgets the user in one IndexedDB transaction: a zero personal part, no pending
    /// observations, and no unsent update (the queued pushes are taken back out of the shared
    /// head, which returns to the last pulled global). What a sync already delivered is part
    /// of the global model and stays there.
    async fn forget(&self) -> Result<()> {
        let _busy = self.begin("forget")?;
        let _writing = self.write().await?;
        let (weights, sync) = self.with(|m| {
            let mut sync = self
                .sync
                .try_borrow()
                .map_err(|_| Error::Busy("the sync state is in use by another call".into()))?
                .clone();
            let shared = sync.forget()?;
            Ok((m.forgotten(shared.head)?, sync))
        })?;
        self.store_replacing(&store::to_bytes(&weights)?, &sync)
            .await?;
        *self.sync.borrow_mut() = sync;
        self.with(|m| m.install_forgotten(weights))
    }
}

/// After a commit of `held`'s model that moved it to `generation`: tells the other instances
/// (a commit of observations only leaves the generation, and the others need not hear of it).
fn announce(channel: Option<&channel::Channel>, held: &Incarnation, generation: u64) {
    if let Some(c) = channel {
        if generation != held.generation {
            c.announce_commit(&held.id, generation);
        }
    }
}

/// Yields to the event loop (a page repaints, a worker reads its messages) between epochs.
async fn yield_to_host() {
    sync::sleep(0).await
}

/// A promise of `fut`, its error mapped to a `TacitError`.
fn promise<T: Into<JsValue>>(
    fut: impl std::future::Future<Output = Result<T>> + 'static,
) -> Promise {
    future_to_promise(async move { fut.await.map(Into::into).map_err(to_js) })
}

#[wasm_bindgen]
impl RewardModel {
    /// Opens the model `name` (default `"default"`): restored from IndexedDB when it was saved
    /// before, otherwise made from the options and saved.
    #[wasm_bindgen(unchecked_return_type = "RewardModel")]
    pub async fn open(
        #[wasm_bindgen(unchecked_optional_param_type = "OpenOptions")] options: JsValue,
    ) -> std::result::Result<RewardModel, JsValue> {
        open(options).await.map_err(to_js)
    }

    /// Deletes a stored model: its weights, pending observations and sync state (queued
    /// updates included). Waits for a writing call of another tab to end; every open
    /// instance of the model, in any tab, is closed by it (its next call is `closed`).
    #[wasm_bindgen(js_name = delete, unchecked_return_type = "Promise<void>")]
    pub fn delete_stored(name: String) -> Promise {
        promise(async move {
            origin::delete(&name).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The models stored by this origin (name order): what `open({ name })` would restore.
    #[wasm_bindgen(unchecked_return_type = "Promise<ModelInfo[]>")]
    pub fn list() -> Promise {
        promise(async move { result_to_js(&origin::list().await?) })
    }

    /// Deletes everything the package stores for this origin (every model, its observations,
    /// its queued updates: the whole database). Every open model, in every tab, is closed.
    #[wasm_bindgen(js_name = deleteAll, unchecked_return_type = "Promise<void>")]
    pub fn delete_all() -> Promise {
        promise(async move {
            origin::delete_all().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// `"webgpu"` or `"cpu"`: where scores and training run now.
    #[wasm_bindgen(getter, unchecked_return_type = "\"webgpu\" | \"cpu\"")]
    pub fn backend(&self) -> std::result::Result<String, JsValue> {
        self.inner
            .with(|m| Ok(backend::name(m.device()).to_string()))
            .map_err(to_js)
    }

    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Embedding width the model takes.
    #[wasm_bindgen(getter)]
    pub fn dim(&self) -> usize {
        self.inner.spec.dim
    }

    /// Whether weights and the pending log are kept in IndexedDB.
    #[wasm_bindgen(getter)]
    pub fn persistent(&self) -> bool {
        self.inner.storage.is_some()
    }

    /// Scores `n` embeddings (a `Float32Array` of `n × dim`, row after row): a
    /// `Float32Array` of `n` rewards (logits; higher is better): the shared model and the
    /// personal part together, or the shared model alone with `{ sharedOnly: true }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array>")]
    pub fn score(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Float32Array | number[]")] embeddings: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "ScoreOptions")] options: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.score(&embeddings, options).await?;
            Ok(Float32Array::from(&s[..]))
        })
    }

    /// Orders candidates best first: indices into the `n` embeddings.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint32Array>")]
    pub fn rank(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Float32Array | number[]")] embeddings: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "ScoreOptions")] options: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.score(&embeddings, options).await?;
            Ok(Uint32Array::from(&model::rank(&s)[..]))
        })
    }

    /// Logs what the user did with one shown answer. Resolves (with the entry's sequence
    /// number) once the observation is stored: from then on a reload keeps it.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn observe(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Observation")] observation: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move { Ok(JsValue::from_f64(inner.observe(observation).await? as f64)) })
    }

    /// Trains on the pending observations, then stores the new weights and drops those
    /// observations in one transaction. `onProgress` is called after every epoch; return
    /// `false` from it to stop early.
    #[wasm_bindgen(unchecked_return_type = "Promise<TrainResult>")]
    pub fn train(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "TrainOptions")] options: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move { result_to_js(&inner.train(options).await?) })
    }

    /// Pushes what training changed since the last sync (a clipped delta, queued in
    /// IndexedDB first, so that an update made offline goes out later and only once), then
    /// pulls the merged global if it is newer and rebases the local weights onto it.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncResult>")]
    pub fn sync(
        &self,
        #[wasm_bindgen(unchecked_param_type = "SyncOptions")] options: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move { result_to_js(&inner.sync(options).await?) })
    }

    /// The weights as safetensors bytes (with the model's metadata).
    #[wasm_bindgen(js_name = exportWeights)]
    pub fn export_weights(&self) -> std::result::Result<Uint8Array, JsValue> {
        self.inner
            .with(|m| m.export_weights())
            .map(|b| Uint8Array::from(&b[..]))
            .map_err(to_js)
    }

    /// Replaces the weights with safetensors bytes of the same head shape, and stores them.
    /// On any error the model keeps its weights.
    #[wasm_bindgen(js_name = importWeights, unchecked_return_type = "Promise<void>")]
    pub fn import_weights(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Uint8Array")] bytes: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            inner.import_weights(&bytes).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Pending observations, the last training call's loss and effective sample size, …
    #[wasm_bindgen(unchecked_return_type = "Stats")]
    pub fn stats(&self) -> std::result::Result<JsValue, JsValue> {
        let inner = &self.inner;
        inner
            .with(|m| {
                let core = m.stats();
                let mut stats = result_to_js(&core)?;
                let obj: &js_sys::Object = stats.unchecked_ref();
                let set = |k: &str, v: JsValue| js_sys::Reflect::set(obj, &k.into(), &v);
                let _ = set("backend", backend::name(m.device()).into());
                let _ = set("lastScore", backend::served_to_js(core.last_score));
                let _ = set("persistent", inner.storage.is_some().into());
                stats = obj.clone().into();
                Ok(stats)
            })
            .map_err(to_js)
    }

    /// Fresh weights (the spec's seed) and an empty pending log, stored.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn reset(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            inner.reset().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Forgets the user: the personal part returns to zero, the pending observations and the
    /// unsent updates are dropped, and the shared head returns to the last pulled global, in
    /// one IndexedDB transaction. Updates a sync already delivered stay in the global model.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn forget(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            inner.forget().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Releases the model (GPU buffers, the database handle). Later calls fail with `closed`.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            inner.close_model("close() was called");
            Ok(JsValue::UNDEFINED)
        })
    }
}

async fn open(options: JsValue) -> Result<RewardModel> {
    let opts = OpenOptions::parse(options)?;
    let name = opts.name().to_string();
    let storage = match (opts.persist, storage::factory()) {
        (Some(false), _) | (None, None) => None,
        (_, Some(f)) => Some(Storage::open(&f).await?),
        (Some(true), None) => {
            return Err(Error::Storage(
                "persist: true, but this environment has no IndexedDB".into(),
            ))
        }
    };
    // Listening before the first read: a commit of another tab is either in what this tab
    // reads or announced to it afterwards, never missed in between.
    let channel = storage.as_ref().and_then(|_| channel::Channel::open(&name));
    let mut stored = match &storage {
        Some(s) => s.load(&name).await?,
        None => None,
    };
    // A model to make, or one stored before `meta` records to adopt: under the model's lock
    // (read again there), so that two tabs opening a new name make one model. A model that
    // is stored opens without waiting for another tab's writing call.
    let needs_record = stored.as_ref().is_none_or(|s| s.incarnation.is_none());
    let _lock = match &storage {
        Some(s) if needs_record => {
            let held = lock::acquire(&name).await?;
            stored = s.load(&name).await?;
            held
        }
        _ => None,
    };
    let spec = opts.spec(stored.as_ref().map(|s| &s.spec))?;
    // A stored model (so a persistent one) opened with another window size: the record takes
    // it at once.
    let new_window = stored
        .as_ref()
        .is_some_and(|s| s.spec.replay_turns != spec.replay_turns);
    let device = backend::choose(opts.backend).await?;
    let placement = backend::placement(opts.backend, &device, &spec.head_config()).await;
    let (mut model, sync, stored_as) = match (stored, &storage) {
        (Some(mut stored), Some(s)) => {
            let incarnation = match stored.incarnation.take() {
                Some(i) => i,
                // Stored before `meta` records: this tab gives it one.
                None => {
                    let id = storage::new_id();
                    let guard = Guard::Create {
                        id: &id,
                        spec: &spec,
                    };
                    let generation = s.commit(&name, guard, Commit::default()).await?;
                    if let Some(c) = &channel {
                        c.announce_commit(&id, generation);
                    }
                    Incarnation { id, generation }
                }
            };
            let (m, sync) = restore(&spec, stored, device)?;
            (m, sync, Some(incarnation))
        }
        (_, storage) => {
            let m = Model::new(&spec, device)?;
            // The starting weights are the sync reference: training before the first sync
            // is then pushed as a change, even across reloads.
            let sync = SyncState::fresh(m.weights().clone());
            let stored_as = match storage {
                Some(s) => {
                    let bytes = m.export_weights()?;
                    let commit = Commit {
                        model: Some((&spec, &bytes, TrainingHistory::default(), &[])),
                        sync: Some(&sync),
                        ..Commit::default()
                    };
                    let id = storage::new_id();
                    let guard = Guard::Create {
                        id: &id,
                        spec: &spec,
                    };
                    let generation = s.commit(&name, guard, commit).await?;
                    if let Some(c) = &channel {
                        c.announce_commit(&id, generation);
                    }
                    Some(Incarnation { id, generation })
                }
                None => None,
            };
            (m, sync, stored_as)
        }
    };
    model.set_placement(placement);
    let rm = RewardModel {
        inner: Rc::new(Inner {
            name,
            spec,
            storage,
            state: RefCell::new(State {
                model: Some(model),
                closed: "close() was called",
                busy: None,
            }),
            sync: RefCell::new(sync),
            stored_as: RefCell::new(stored_as),
            writing: Cell::new(0),
            in_flight: RefCell::new(BTreeSet::new()),
            channel,
        }),
    };
    // The record's own lock (held when this tab gave an old record its `meta`) is released
    // before the write takes it again.
    drop(_lock);
    if new_window {
        rm.inner.store_window_size().await?;
    }
    Ok(rm)
}

/// The model and sync state of a stored record (`open`, and a reload after another tab
/// wrote).
fn restore(spec: &ModelSpec, stored: Stored, device: Device) -> Result<(Model, SyncState)> {
    let mut weights = store::from_bytes_expecting(&stored.weights, &spec.head_config())?;
    weights.personal = personal_part(spec, weights.personal.take(), &weights.head)?;
    let sync = match stored.sync {
        Some(state) => state,
        None => SyncState::fresh(weights.clone()),
    };
    let mut m = Model::restore(weights, spec.objective, stored.log, device)?;
    m.set_auto_objective(spec.auto_objective);
    m.restore_history(stored.history);
    m.set_replay_turns(spec.replay_turns)?;
    m.restore_replay(stored.replay)?;
    Ok((m, sync))
}

/// The personal part a stored model opens with: its own, or a zero one of the spec's kind
/// for a model stored before it had one.
fn personal_part(
    spec: &ModelSpec,
    stored: Option<Personal>,
    head: &crate::head::Head,
) -> Result<Option<Personal>> {
    match (stored, spec.personalization) {
        (None, Personalization::None) => Ok(None),
        (None, kind) => Ok(Some(Personal::new(kind, &head.config)?)),
        (Some(p), kind) if p.kind == kind => Ok(Some(p)),
        (Some(p), kind) => Err(Error::CorruptWeights(format!(
            "the stored weights hold a '{}' personal part, the stored model says '{}'",
            p.kind.name(),
            kind.name()
        ))),
    }
}

/// The built-in featurizer: signed feature hashing of word and character n-grams into `dim`
/// floats, L2-normalised, for apps without an encoder. One row per text.
#[wasm_bindgen]
pub fn featurize(
    #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
    #[wasm_bindgen(unchecked_param_type = "number")] dim: JsValue,
) -> std::result::Result<Float32Array, JsValue> {
    let run = || -> Result<Float32Array> {
        // A JS number, checked here: a `usize` parameter would wrap −1 to 2³²−1 silently.
        let dim = dim
            .as_f64()
            .filter(|d| d.fract() == 0.0 && (1.0..=crate::head::MAX_WIDTH as f64).contains(d))
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "featurize dim must be an integer in 1..={}, got {dim:?}",
                    crate::head::MAX_WIDTH
                ))
            })? as usize;
        if !js_sys::Array::is_array(&texts) {
            return Err(Error::InvalidData(
                "texts must be an array of strings".into(),
            ));
        }
        let texts: Vec<String> = js_sys::Array::from(&texts)
            .iter()
            .map(|t| {
                t.as_string()
                    .ok_or_else(|| Error::InvalidData("texts must be strings".into()))
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Ok(Float32Array::from(
            &crate::featurize::featurize_batch(&refs, dim)?[..],
        ))
    };
    run().map_err(to_js)
}
