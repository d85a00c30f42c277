//! `tacit eval`: train every method on simulated feedback from a training split, score a
//! clean test split against the true labels, and summarise over seeds (DESIGN §4).
//! No method ever sees clean labels, except the `oracle` row, which is the ceiling.

pub mod metrics;
#[cfg(not(target_arch = "wasm32"))]
pub mod users;

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::backend::Device;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::feedback::propensity::PropensityModel;
use crate::feedback::Examples;
use crate::head::{Activation, Head, HeadConfig};
use crate::objective::{ObjectiveConfig, ObjectiveKind};
use crate::rng::Rng;
use crate::sim::{SimConfig, Simulated, Simulator};
use crate::trainer::{self, TrainConfig, TrainRequest};

use metrics::Metrics;

/// A row of the evaluation table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Objective(ObjectiveKind),
    /// Trained on the true labels: the ceiling.
    Oracle,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Objective(k) => k.name(),
            Method::Oracle => "oracle",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        if name == "oracle" {
            return Ok(Method::Oracle);
        }
        ObjectiveKind::parse(name)
            .map(Method::Objective)
            .map_err(|_| {
                let mut expected = ObjectiveKind::NAMES.to_vec();
                expected.push("oracle");
                Error::unknown("method", name, &expected)
            })
    }

    /// Every objective plus the oracle.
    pub fn all() -> Vec<Method> {
        let mut v: Vec<Method> = ObjectiveKind::ALL
            .iter()
            .map(|&k| Method::Objective(k))
            .collect();
        v.push(Method::Oracle);
        v
    }

    /// Parses a comma-separated list; `all` means [`Method::all`].
    pub fn parse_list(list: &str) -> Result<Vec<Method>> {
        if list.trim() == "all" {
            return Ok(Self::all());
        }
        let methods = list
            .split(',')
            .map(|s| Method::parse(s.trim()))
            .collect::<Result<Vec<_>>>()?;
        if methods.is_empty() {
            return Err(Error::Empty {
                what: "method list".into(),
            });
        }
        Ok(methods)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    pub sim: SimConfig,
    pub seeds: usize,
    #[serde(skip)]
    pub methods: Vec<Method>,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub train: TrainConfig,
    /// Ridge strength of the propensity model.
    pub propensity_l2: f64,
    /// What the app's propensity model sees.
    pub propensity_features: PropensityFeatures,
    /// Give the noise-aware objectives the simulator's flip rates instead of estimating them.
    pub flip_known: bool,
    /// Fractions of pair groups for train / validation / test.
    pub splits: [f64; 3],
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            sim: SimConfig::default(),
            seeds: 5,
            methods: Method::all(),
            hidden: Vec::new(),
            activation: Activation::Relu,
            train: TrainConfig::default(),
            propensity_l2: 30.0,
            propensity_features: PropensityFeatures::ExposureAndEmbedding,
            flip_known: false,
            splits: [0.6, 0.2, 0.2],
        }
    }
}

/// Inputs of the propensity model `P(reaction | exposure)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PropensityFeatures {
    /// Position, number of candidates, length, dwell.
    Exposure,
    /// Those plus the response embedding: an app knows which answers got *any* reaction,
    /// so it can learn which kinds of answers draw reactions, whatever their sign.
    ExposureAndEmbedding,
    /// The simulator's true propensities: a diagnostic ceiling no app has.
    True,
}

impl PropensityFeatures {
    pub const NAMES: [&'static str; 3] = ["exposure", "exposure+embedding", "true"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "exposure" => Ok(PropensityFeatures::Exposure),
            "exposure+embedding" => Ok(PropensityFeatures::ExposureAndEmbedding),
            "true" => Ok(PropensityFeatures::True),
            other => Err(Error::unknown(
                "propensity feature set",
                other,
                &Self::NAMES,
            )),
        }
    }

    /// The model's input matrix for a set of examples.
    pub fn matrix(self, ex: &Examples) -> ndarray::Array2<f32> {
        match self {
            PropensityFeatures::Exposure | PropensityFeatures::True => ex.exposure.clone(),
            PropensityFeatures::ExposureAndEmbedding => {
                ndarray::concatenate(ndarray::Axis(1), &[ex.exposure.view(), ex.emb.view()])
                    .expect("same number of rows")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
}

impl Summary {
    /// Mean and sample standard deviation.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Summary {
            mean,
            std: var.sqrt(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub auroc: Summary,
    pub pair_acc: Option<Summary>,
    pub mae: Summary,
    pub r2: Summary,
    pub pearson: Summary,
    pub nll: Summary,
    /// Per-seed AUROC minus `naive`'s on the same seed (same split and feedback).
    pub auroc_gain_vs_naive: Option<Summary>,
    pub per_seed: Vec<Metrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub config: serde_json::Value,
    pub methods: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub rows: Vec<(String, MethodResult)>,
}

/// One seed's world: splits, simulated feedback with estimated propensities.
struct SeedData {
    train: Simulated,
    val: Simulated,
    test_emb: ndarray::Array2<f32>,
    test_truth: Vec<f32>,
    test_groups: Vec<Vec<usize>>,
}

fn prepare_seed(ds: &Dataset, cfg: &EvalConfig, seed: u64) -> Result<SeedData> {
    let parts = ds.split(&cfg.splits, seed);
    let (train_ds, val_ds, test_ds) = (
        ds.select(&parts[0]),
        ds.select(&parts[1]),
        ds.select(&parts[2]),
    );
    for (name, d) in [
        ("train", &train_ds),
        ("validation", &val_ds),
        ("test", &test_ds),
    ] {
        if d.is_empty() {
            return Err(Error::Empty {
                what: format!("{name} split (data set too small for the split fractions)"),
            });
        }
    }
    let sim = Simulator::new(
        cfg.sim,
        train_ds.emb.view(),
        &train_ds.binary_labels(),
        seed,
    )?;
    let mut rng = Rng::new(seed ^ 0xFEED);
    let scaled = |d: &Dataset| scaled_within(ds, d);
    let mut train = sim.simulate(
        train_ds.emb.view(),
        &scaled(&train_ds),
        &train_ds.groups(),
        &mut rng,
    )?;
    let mut val = sim.simulate(
        val_ds.emb.view(),
        &scaled(&val_ds),
        &val_ds.groups(),
        &mut rng,
    )?;
    // The app's propensity model: fitted on the training exposures' reaction mask.
    attach_propensities(
        cfg.propensity_features,
        cfg.propensity_l2,
        &mut train,
        &mut [&mut val],
    )?;
    let test_truth = test_ds.binary_labels();
    let test_groups = test_ds.groups();
    Ok(SeedData {
        train,
        val,
        test_emb: test_ds.emb,
        test_truth,
        test_groups,
    })
}

/// Fills in `propensity` the way an app would: a propensity model fitted on the training
/// exposures' reaction mask, applied to them and to `others` (or the simulator's truth for
/// [`PropensityFeatures::True`]).
pub fn attach_propensities(
    features: PropensityFeatures,
    l2: f64,
    train: &mut Simulated,
    others: &mut [&mut Simulated],
) -> Result<()> {
    if features == PropensityFeatures::True {
        for s in std::iter::once(train).chain(others.iter_mut().map(|o| &mut **o)) {
            s.examples.propensity = s.true_propensity.clone();
        }
        return Ok(());
    }
    let model = PropensityModel::fit(
        features.matrix(&train.examples).view(),
        &train.examples.feedback,
        l2,
    )?;
    for s in std::iter::once(train).chain(others.iter_mut().map(|o| &mut **o)) {
        s.examples.propensity = model.predict(features.matrix(&s.examples).view())?;
    }
    Ok(())
}

/// Labels of a subset scaled with the whole data set's range (a split may miss a grade).
fn scaled_within(full: &Dataset, subset: &Dataset) -> Vec<f32> {
    let lo = full.label.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = full.label.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    subset.label.iter().map(|&l| (l - lo) / (hi - lo)).collect()
}

/// Trains `method` on one seed's data and scores the test split.
fn run_method(
    device: &Device,
    method: Method,
    data: &SeedData,
    cfg: &EvalConfig,
    seed: u64,
) -> Result<Metrics> {
    let (kind, train, val) = match method {
        Method::Oracle => (
            ObjectiveKind::Naive,
            Examples::fully_labelled(data.train.examples.emb.clone(), data.train.truth.clone()),
            Examples::fully_labelled(data.val.examples.emb.clone(), data.val.truth.clone()),
        ),
        Method::Objective(k) => (k, data.train.examples.clone(), data.val.examples.clone()),
    };
    let head_cfg = HeadConfig {
        dim: train.dim(),
        hidden: cfg.hidden.clone(),
        activation: cfg.activation,
        outputs: kind.head_outputs(),
    };
    let head = Head::init(&head_cfg, seed)?;
    let objective = ObjectiveConfig {
        kind,
        // Flip rates are estimated from anchors, as an app must, unless `flip_known` hands
        // the objectives the simulator's own rates (a diagnostic).
        flip: cfg.flip_known.then_some(cfg.sim.flip),
        ..ObjectiveConfig::default()
    };
    let train_cfg = TrainConfig {
        seed,
        ..cfg.train.clone()
    };
    let request = TrainRequest::new(&head, &objective, &train, &train_cfg).with_val(&val);
    let trained = trainer::train_on(device, &request, &mut |_| ControlFlow::Continue(()))?;
    let scores = device.score(&trained.head, data.test_emb.view())?;
    metrics::evaluate(&scores, &data.test_truth, &data.test_groups)
}

/// Runs the whole evaluation. `on_result` hears of each (seed, method) as it finishes.
pub fn run(
    ds: &Dataset,
    cfg: &EvalConfig,
    on_result: &mut dyn FnMut(usize, Method, &Metrics),
) -> Result<EvalResult> {
    run_on(&Device::Cpu, ds, cfg, on_result)
}

/// Like [`run`], training and scoring on `device`.
pub fn run_on(
    device: &Device,
    ds: &Dataset,
    cfg: &EvalConfig,
    on_result: &mut dyn FnMut(usize, Method, &Metrics),
) -> Result<EvalResult> {
    if cfg.seeds == 0 {
        return Err(Error::InvalidConfig("seeds must be at least 1".into()));
    }
    if cfg.methods.is_empty() {
        return Err(Error::Empty {
            what: "method list".into(),
        });
    }
    cfg.sim.validate()?;
    cfg.train.validate()?;
    let mut per_method: Vec<Vec<Metrics>> = vec![Vec::new(); cfg.methods.len()];
    for s in 0..cfg.seeds {
        let seed = 1000 + s as u64;
        let data = prepare_seed(ds, cfg, seed)?;
        for (m, &method) in cfg.methods.iter().enumerate() {
            let result = run_method(device, method, &data, cfg, seed).map_err(|e| match e {
                Error::InvalidData(msg) => Error::InvalidData(format!("{}: {msg}", method.name())),
                other => other,
            })?;
            on_result(s, method, &result);
            per_method[m].push(result);
        }
    }
    let naive_idx = cfg
        .methods
        .iter()
        .position(|&m| m == Method::Objective(ObjectiveKind::Naive));
    let rows: Vec<(String, MethodResult)> = cfg
        .methods
        .iter()
        .zip(&per_method)
        .map(|(method, runs)| {
            let col =
                |f: &dyn Fn(&Metrics) -> f64| Summary::of(&runs.iter().map(f).collect::<Vec<_>>());
            let pair: Vec<f64> = runs.iter().filter_map(|r| r.pair_acc).collect();
            let gain = naive_idx.map(|ni| {
                Summary::of(
                    &runs
                        .iter()
                        .zip(&per_method[ni])
                        .map(|(a, b)| a.auroc - b.auroc)
                        .collect::<Vec<_>>(),
                )
            });
            (
                method.name().to_string(),
                MethodResult {
                    auroc: col(&|r| r.auroc),
                    pair_acc: (pair.len() == runs.len()).then(|| Summary::of(&pair)),
                    mae: col(&|r| r.mae),
                    r2: col(&|r| r.r2),
                    pearson: col(&|r| r.pearson),
                    nll: col(&|r| r.nll),
                    auroc_gain_vs_naive: gain,
                    per_seed: runs.clone(),
                },
            )
        })
        .collect();
    let mut config = serde_json::to_value(cfg).expect("config serialises");
    config["methods"] =
        serde_json::Value::from(cfg.methods.iter().map(|m| m.name()).collect::<Vec<_>>());
    config["rows"] = serde_json::Value::from(ds.len());
    config["dim"] = serde_json::Value::from(ds.dim());
    let methods = rows
        .iter()
        .map(|(n, r)| {
            (
                n.clone(),
                serde_json::to_value(r).expect("results serialise"),
            )
        })
        .collect();
    Ok(EvalResult {
        config,
        methods,
        rows,
    })
}

impl EvalResult {
    /// The markdown table of the README.
    pub fn markdown(&self) -> String {
        let f = |s: &Summary| format!("{:.3} ± {:.3}", s.mean, s.std);
        let mut out = String::from("| method | AUROC | Δ AUROC vs naive | pair acc | MAE | R² | Pearson | NLL |\n|---|---|---|---|---|---|---|---|\n");
        for (name, r) in &self.rows {
            let gain = match (&r.auroc_gain_vs_naive, name.as_str()) {
                (_, "naive") | (None, _) => "—".to_string(),
                (Some(g), _) => format!("{:+.3} ± {:.3}", g.mean, g.std),
            };
            out.push_str(&format!(
                "| {name} | {} | {gain} | {} | {} | {} | {} | {} |\n",
                f(&r.auroc),
                r.pair_acc.as_ref().map(f).unwrap_or_else(|| "—".into()),
                f(&r.mae),
                f(&r.r2),
                f(&r.pearson),
                f(&r.nll)
            ));
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(
            &serde_json::json!({ "config": self.config, "methods": self.methods }),
        )
        .expect("json")
    }

    pub fn method(&self, name: &str) -> Option<&MethodResult> {
        self.rows.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
}
