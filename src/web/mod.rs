//! The browser package's surface (wasm-bindgen): `RewardModel` and `featurize`. Only
//! conversions, persistence calls and error mapping live here; the logic is in
//! [`crate::model`].
//!
//! Every method that touches the GPU or IndexedDB returns a Promise; every failure is a
//! rejected Promise (or a thrown error for the synchronous getters) carrying a `TacitError`
//! with a stable `code`. Nothing here panics: a `RefCell` borrow is never held across an
//! `await` or a call into JS, so re-entrant calls from callbacks cannot trip it.

mod backend;
mod error;
mod options;
mod storage;
mod types;

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::rc::Rc;

use js_sys::{Float32Array, Promise, Uint32Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

use crate::backend::Device;
use crate::error::{Error, Result};
use crate::model::{self, ModelSpec, RewardModel as Model};
use crate::store;
use crate::trainer;
use error::to_js;
use options::{
    float_array, parse_train, to_js as result_to_js, ObserveInput, OpenOptions, TrainResult,
};
use storage::Storage;

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
}

struct State {
    /// `None` once closed.
    model: Option<Model>,
    training: bool,
}

/// Clears the `training` flag however a training call ends.
struct TrainingGuard<'a>(&'a Inner);

impl Drop for TrainingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.try_borrow_mut() {
            st.training = false;
        }
    }
}

impl Inner {
    /// Runs `f` on the open model, without holding the borrow beyond it.
    fn with<T>(&self, f: impl FnOnce(&mut Model) -> Result<T>) -> Result<T> {
        let mut st = self
            .state
            .try_borrow_mut()
            .map_err(|_| Error::Busy("the model is in use by another call".into()))?;
        f(st.model.as_mut().ok_or(Error::Closed)?)
    }

    async fn score(&self, embeddings: &JsValue) -> Result<Vec<f32>> {
        let flat = float_array(embeddings, "embeddings")?;
        let (device, head) = self.with(|m| Ok((m.device().clone(), m.weights().head.clone())))?;
        let x = model::embeddings(head.config.dim, &flat)?;
        match trainer::score_async(&device, &head, x).await {
            Err(Error::DeviceLost(_)) => {
                // The GPU is gone; the weights are not: carry on on the CPU from now on.
                self.with(|m| {
                    m.set_device(Device::Cpu);
                    Ok(())
                })?;
                trainer::score(&head, x)
            }
            other => other,
        }
    }

    async fn observe(&self, observation: JsValue) -> Result<u64> {
        let entry = ObserveInput::parse(observation)?;
        let entry = self.with(|m| m.observe(entry))?;
        if let Some(s) = &self.storage {
            if let Err(e) = s.add_observation(&self.name, &entry).await {
                // Not stored, so not acknowledged: take it back out of the pending log.
                let _ = self.with(|m| {
                    m.unobserve(entry.seq);
                    Ok(())
                });
                return Err(e);
            }
        }
        Ok(entry.seq)
    }

    async fn train(&self, options: JsValue) -> Result<TrainResult> {
        let (opts, on_progress) = parse_train(options)?;
        let job = {
            let mut st = self
                .state
                .try_borrow_mut()
                .map_err(|_| Error::Busy("the model is in use by another call".into()))?;
            if st.training {
                return Err(Error::Busy("a training call is already running".into()));
            }
            let job = st
                .model
                .as_ref()
                .ok_or(Error::Closed)?
                .prepare_training(&opts)?;
            st.training = true;
            job
        };
        let _guard = TrainingGuard(self);
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
        let bytes = self.with(|m| m.trained_bytes(&outcome))?;
        if let Some(s) = &self.storage {
            s.save_trained(&self.name, &self.spec, &bytes, outcome.upto_seq)
                .await?;
        }
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

    async fn import_weights(&self, bytes: &JsValue) -> Result<()> {
        let bytes = bytes
            .dyn_ref::<Uint8Array>()
            .ok_or_else(|| Error::CorruptWeights("weights must be a Uint8Array".into()))?
            .to_vec();
        let weights = store::from_bytes_expecting(&bytes, &self.spec.head_config())?;
        if let Some(s) = &self.storage {
            s.save_model(&self.name, &self.spec, &bytes).await?;
        }
        self.with(|m| m.import_weights(&store::to_bytes(&weights)?))
    }

    async fn reset(&self) -> Result<()> {
        let fresh = Model::new(&self.spec, Device::Cpu)?;
        let bytes = fresh.export_weights()?;
        if let Some(s) = &self.storage {
            s.replace(&self.name, &self.spec, &bytes).await?;
        }
        self.with(|m| {
            let device = m.device().clone();
            *m = Model::new(&self.spec, device)?;
            Ok(())
        })
    }
}

/// Yields to the event loop (a page repaints, a worker reads its messages) between epochs.
async fn yield_to_host() {
    let promise = Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let scheduled = set_timeout
            .map(|f| f.call2(&global, &resolve, &JsValue::from(0)).is_ok())
            .unwrap_or(false);
        if !scheduled {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(promise).await;
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
        #[wasm_bindgen(unchecked_param_type = "OpenOptions | undefined")] options: JsValue,
    ) -> std::result::Result<RewardModel, JsValue> {
        open(options).await.map_err(to_js)
    }

    /// Deletes a stored model and its pending log (a model that is open stays usable in
    /// memory until closed).
    #[wasm_bindgen(js_name = delete, unchecked_return_type = "Promise<void>")]
    pub fn delete_stored(name: String) -> Promise {
        promise(async move {
            if let Some(f) = storage::factory() {
                Storage::open(&f).await?.delete(&name).await?;
            }
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
    /// `Float32Array` of `n` rewards (logits; higher is better).
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array>")]
    pub fn score(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Float32Array | number[]")] embeddings: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.score(&embeddings).await?;
            Ok(Float32Array::from(&s[..]))
        })
    }

    /// Orders candidates best first: indices into the `n` embeddings.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint32Array>")]
    pub fn rank(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Float32Array | number[]")] embeddings: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.score(&embeddings).await?;
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
        #[wasm_bindgen(unchecked_param_type = "TrainOptions | undefined")] options: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        promise(async move { result_to_js(&inner.train(options).await?) })
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
                let mut stats = result_to_js(&m.stats())?;
                let obj: &js_sys::Object = stats.unchecked_ref();
                let set = |k: &str, v: JsValue| js_sys::Reflect::set(obj, &k.into(), &v);
                let _ = set("backend", backend::name(m.device()).into());
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

    /// Releases the model (GPU buffers, the database handle). Later calls fail with `closed`.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            if let Ok(mut st) = inner.state.try_borrow_mut() {
                st.model = None;
            }
            if let Some(s) = &inner.storage {
                s.close();
            }
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
    let stored = match &storage {
        Some(s) => s.load(&name).await?,
        None => None,
    };
    let spec = opts.spec(stored.as_ref().map(|s| &s.spec))?;
    let device = backend::choose(opts.backend).await?;
    let model = match stored {
        Some(s) => {
            let weights = store::from_bytes_expecting(&s.weights, &spec.head_config())?;
            Model::restore(weights, spec.objective, s.log, device)?
        }
        None => {
            let m = Model::new(&spec, device)?;
            if let Some(s) = &storage {
                s.save_model(&name, &spec, &m.export_weights()?).await?;
            }
            m
        }
    };
    Ok(RewardModel {
        inner: Rc::new(Inner {
            name,
            spec,
            storage,
            state: RefCell::new(State {
                model: Some(model),
                training: false,
            }),
        }),
    })
}

/// The built-in featurizer: signed feature hashing of word and character n-grams into `dim`
/// floats, L2-normalised, for apps without an encoder. One row per text.
#[wasm_bindgen]
pub fn featurize(
    #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
    dim: usize,
) -> std::result::Result<Float32Array, JsValue> {
    let run = || -> Result<Float32Array> {
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
