//! The options objects of the JS API and the result objects it returns: deserialised with
//! serde-wasm-bindgen (unknown fields refused, defaults filled in), converted to the crate's
//! types, validated there. The TypeScript declarations of these shapes are in `types.rs`.

use js_sys::ArrayBuffer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};

use super::error::from_serde;
use crate::error::{Error, Result};
use crate::feedback::events::Observation;
use crate::head::Activation;
use crate::model::{ModelSpec, TrainOptions};
use crate::objective::ObjectiveKind;
use crate::personal::Personalization;
use crate::trainer::{EpochReport, TrainReport, TrainedPart};

/// Which backend to run on: the probe's choice, or a forced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    #[default]
    Auto,
    Webgpu,
    Cpu,
}

/// `RewardModel.open(options)`. Head fields left out are taken from the stored model when
/// there is one, else from [`ModelSpec::default`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenOptions {
    pub name: Option<String>,
    pub backend: BackendChoice,
    /// Keep weights and the pending log in IndexedDB (default: whenever it exists).
    pub persist: Option<bool>,
    pub dim: Option<usize>,
    pub hidden: Option<Vec<usize>>,
    pub activation: Option<Activation>,
    /// An objective, or "auto" (the default for a new model): chosen per training call
    /// from the signals of the pending observations (`crate::objective::choice`).
    pub objective: Option<ObjectiveOption>,
    pub seed: Option<u64>,
    /// The personal part kept beside the shared head (default
    /// [`Personalization::default_for`] the head: `basis`, or `residual` on a linear head;
    /// `none` for the shared model alone).
    pub personalization: Option<Personalization>,
    /// The replay window in turns ([`ModelSpec::replay_turns`]; default: the stored model's,
    /// else [`crate::model::DEFAULT_REPLAY_TURNS`]). Unlike the head options it may change
    /// from one open to the next.
    pub replay_turns: Option<usize>,
}

/// `OpenOptions.objective`: an objective's name or "auto".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectiveOption {
    Auto,
    Fixed(ObjectiveKind),
}

impl<'de> Deserialize<'de> for ObjectiveOption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == "auto" {
            return Ok(ObjectiveOption::Auto);
        }
        ObjectiveKind::parse(&name)
            .map(ObjectiveOption::Fixed)
            .map_err(|e| serde::de::Error::custom(format!("objective: {e} (or \"auto\")")))
    }
}

/// `score(embeddings, options)` and `rank(embeddings, options)`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ScoreOptions {
    /// The shared (crowd) model's score alone, without the personal part.
    pub shared_only: bool,
}

impl ScoreOptions {
    pub fn parse(value: JsValue) -> Result<Self> {
        if value.is_undefined() || value.is_null() {
            return Ok(ScoreOptions::default());
        }
        strict(value, "score options")
    }
}

pub const DEFAULT_NAME: &str = "default";
const MAX_NAME: usize = 128;

/// Deserialises an options object strictly. serde-wasm-bindgen looks up only the fields a
/// struct declares, so an unknown (say, misspelt) option would pass unnoticed; going through
/// a JSON value makes every key visible to `deny_unknown_fields`.
pub fn strict<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T> {
    from_json(to_json(value, what)?, what)
}

/// An options object as a JSON value (every key visible).
fn to_json(value: JsValue, what: &str) -> Result<serde_json::Value> {
    if !value.is_object() || js_sys::Array::is_array(&value) {
        return Err(Error::InvalidConfig(format!("{what} must be an object")));
    }
    non_finite_numbers(&value, what, "")?;
    serde_wasm_bindgen::from_value(value).map_err(|e| from_serde(what, e))
}

/// JSON has no NaN or ±Infinity: on the way to a JSON value they would become `null`, which
/// reads as "not given" and would silently put the default in their place. Refused instead,
/// in plain objects and arrays at any depth.
fn non_finite_numbers(value: &JsValue, what: &str, path: &str) -> Result<()> {
    if let Some(n) = value.as_f64() {
        if !n.is_finite() {
            return Err(Error::InvalidConfig(format!(
                "{what}: {} is {n}, not a finite number",
                if path.is_empty() { "the value" } else { path }
            )));
        }
        return Ok(());
    }
    if js_sys::Array::is_array(value) {
        let array: &js_sys::Array = value.unchecked_ref();
        for (i, item) in array.iter().enumerate() {
            non_finite_numbers(&item, what, &format!("{path}[{i}]"))?;
        }
    } else if value.is_object() && !ArrayBuffer::is_view(value) {
        let object: &js_sys::Object = value.unchecked_ref();
        for key in js_sys::Object::keys(object).iter() {
            let name = key.as_string().unwrap_or_default();
            let item = js_sys::Reflect::get(value, &key).unwrap_or_default();
            let at = if path.is_empty() {
                name
            } else {
                format!("{path}.{name}")
            };
            non_finite_numbers(&item, what, &at)?;
        }
    }
    Ok(())
}

/// `T` from a JSON value, an unknown key as [`Error::UnknownOption`].
fn from_json<T: DeserializeOwned>(json: serde_json::Value, what: &str) -> Result<T> {
    serde_json::from_value(json).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("unknown field") {
            Error::UnknownOption(format!("{what}: {message}"))
        } else {
            Error::InvalidConfig(format!("{what}: {message}"))
        }
    })
}

/// A shallow copy of `value` without `field`, and that field's value (functions and typed
/// arrays are not data for serde, so they are taken out first).
fn take(value: &JsValue, field: &str) -> (JsValue, JsValue) {
    let taken = js_sys::Reflect::get(value, &field.into()).unwrap_or_default();
    let rest = js_sys::Object::assign(&js_sys::Object::new(), value.unchecked_ref());
    let _ = js_sys::Reflect::delete_property(&rest, &field.into());
    (rest.into(), taken)
}

impl OpenOptions {
    pub fn parse(value: JsValue) -> Result<Self> {
        if value.is_undefined() || value.is_null() {
            return Ok(OpenOptions::default());
        }
        let o: OpenOptions = strict(value, "open options")?;
        let name = o.name();
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::InvalidConfig(format!(
                "name must be 1 to {MAX_NAME} characters"
            )));
        }
        Ok(o)
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_NAME)
    }

    /// The head to make, filling gaps from `stored` (then from the defaults); fields the
    /// caller gave must agree with a stored model.
    pub fn spec(&self, stored: Option<&ModelSpec>) -> Result<ModelSpec> {
        // A new model left without an objective chooses it from its signals; a stored one
        // keeps what it was made with.
        let base = stored.cloned().unwrap_or(ModelSpec {
            auto_objective: true,
            ..ModelSpec::default()
        });
        let (objective, auto_objective) = match self.objective {
            None => (base.objective, base.auto_objective),
            // One output, as every objective but beta: the shape the choice trains.
            Some(ObjectiveOption::Auto) => (ObjectiveKind::Implicit, true),
            Some(ObjectiveOption::Fixed(kind)) => (kind, false),
        };
        let hidden = self.hidden.clone().unwrap_or_else(|| base.hidden.clone());
        // A stored model keeps its personal part; a new one gets the default for its head.
        let default_personalization = match stored {
            Some(s) => s.personalization,
            None => Personalization::default_for(&hidden),
        };
        let spec = ModelSpec {
            dim: self.dim.unwrap_or(base.dim),
            hidden,
            activation: self.activation.unwrap_or(base.activation),
            objective,
            auto_objective,
            seed: self.seed.unwrap_or(base.seed),
            personalization: self.personalization.unwrap_or(default_personalization),
            replay_turns: self.replay_turns.unwrap_or(base.replay_turns),
        };
        crate::model::check_replay_turns(spec.replay_turns)?;
        if let Some(s) = stored {
            if s.personalization != spec.personalization {
                return Err(Error::IncompatibleWeights(format!(
                    "the stored model '{}' has personalization '{}', not '{}'; open it without \
                     the option, with the same one, or delete it first (RewardModel.delete)",
                    self.name(),
                    s.personalization.name(),
                    spec.personalization.name(),
                )));
            }
            if s.head_config() != spec.head_config() {
                return Err(Error::IncompatibleWeights(format!(
                    "the stored model '{}' is {}→{:?}→{} ({}); open it without head options, \
                     with the same ones, or call reset()",
                    self.name(),
                    s.dim,
                    s.hidden,
                    s.objective.head_outputs(),
                    s.activation.name(),
                )));
            }
        }
        spec.head_config().validate()?;
        Ok(spec)
    }
}

const MAX_ID: usize = 256;

/// `observe(observation)`: the option object as the crate's one [`Observation`] type. The
/// embedding is read apart (a typed array is not data for serde); the log's `seq` is the
/// model's to assign, so an app that passes one is told it is unknown.
pub fn parse_observation(value: JsValue) -> Result<Observation> {
    if !value.is_object() {
        return Err(Error::InvalidData(
            "an observation must be an object".into(),
        ));
    }
    let (rest, embedding) = take(&value, "embedding");
    if embedding.is_undefined() {
        return Err(Error::InvalidData(
            "observation: missing field `embedding`".into(),
        ));
    }
    let embedding = float_array(&embedding, "observation embedding")?;
    let mut json = to_json(rest, "observation")?;
    let fields = json
        .as_object_mut()
        .ok_or_else(|| Error::InvalidData("an observation must be an object".into()))?;
    if fields.contains_key("seq") {
        return Err(Error::UnknownOption(
            "observation: unknown field `seq` (the model numbers its log)".into(),
        ));
    }
    // A placeholder for the field read apart (the model validates the real one).
    fields.insert("embedding".into(), serde_json::Value::Array(Vec::new()));
    let mut o: Observation = from_json(json, "observation")?;
    o.embedding = embedding;
    if o.id.len() > MAX_ID || o.turn.as_ref().is_some_and(|t| t.len() > MAX_ID) {
        return Err(Error::InvalidData(format!(
            "id and turn must be at most {MAX_ID} characters"
        )));
    }
    Ok(o)
}

/// `train(options)`: the crate's [`TrainOptions`] plus the `onProgress` callback, which is
/// taken out before the rest is deserialised (a function is not data).
pub fn parse_train(value: JsValue) -> Result<(TrainOptions, Option<js_sys::Function>)> {
    if value.is_undefined() || value.is_null() {
        return Ok((TrainOptions::default(), None));
    }
    if !value.is_object() {
        return Err(Error::InvalidConfig(
            "train options must be an object".into(),
        ));
    }
    let (rest, on_progress) = take(&value, "onProgress");
    let callback = if on_progress.is_undefined() || on_progress.is_null() {
        None
    } else {
        Some(
            on_progress
                .dyn_into::<js_sys::Function>()
                .map_err(|_| Error::InvalidConfig("onProgress must be a function".into()))?,
        )
    };
    let options: TrainOptions = strict(rest, "train options")?;
    Ok((options, callback))
}

/// What `onProgress` receives after each epoch.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressEvent {
    pub epoch: usize,
    pub epochs: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub effective_sample_size: f64,
    /// Which part this epoch trained: the personal runs come first, then the shared one.
    pub part: TrainedPart,
    /// Share of the whole call's planned epochs done (both parts), for a progress bar.
    pub fraction: f64,
}

impl From<&EpochReport> for ProgressEvent {
    fn from(e: &EpochReport) -> Self {
        ProgressEvent {
            epoch: e.epoch,
            epochs: e.epochs,
            train_loss: e.train_loss,
            val_loss: e.val_loss,
            effective_sample_size: e.effective_sample_size,
            part: e.part,
            fraction: e.fraction,
        }
    }
}

/// What `train` resolves to.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainResult {
    pub objective: String,
    pub examples: usize,
    pub epochs: Vec<ProgressEvent>,
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub cancelled: bool,
    pub steps: u64,
    pub final_loss: Option<f64>,
    /// The GPU was lost during the call; it finished on the CPU (now the model's backend).
    pub fell_back_to_cpu: bool,
}

impl TrainResult {
    pub fn new(objective: ObjectiveKind, examples: usize, r: &TrainReport) -> Self {
        TrainResult {
            objective: objective.name().into(),
            examples,
            epochs: r.epochs.iter().map(ProgressEvent::from).collect(),
            best_epoch: r.best_epoch,
            stopped_early: r.stopped_early,
            cancelled: r.cancelled,
            steps: r.steps,
            final_loss: r.final_loss(),
            fell_back_to_cpu: r.fell_back_to_cpu,
        }
    }
}

/// A `Float32Array` (or an array of numbers) as a vector.
pub fn float_array(value: &JsValue, what: &str) -> Result<Vec<f32>> {
    if let Some(a) = value.dyn_ref::<js_sys::Float32Array>() {
        return Ok(a.to_vec());
    }
    if js_sys::Array::is_array(value) {
        return js_sys::Array::from(value)
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| Error::InvalidData(format!("{what} must hold numbers")))
            })
            .collect();
    }
    Err(Error::InvalidData(format!(
        "{what} must be a Float32Array (n × dim values, row after row)"
    )))
}

/// Plain JS objects (not `Map`s) for results.
pub fn to_js<T: Serialize>(value: &T) -> Result<JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| Error::InvalidData(format!("converting a result for JS: {e}")))
}
