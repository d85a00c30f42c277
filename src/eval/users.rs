//! `tacit eval --protocol users`: the multi-user protocol of DESIGN §10. Simulated users with
//! known, different tastes react to turns of candidates through an implicit-feedback model;
//! each trains its own [`RewardModel`] on the device (the same code the browser package runs)
//! and the shared parts are merged by the server's aggregation code
//! ([`crate::sync::aggregate`]). Every system trains from the same feedback; the score is
//! each user's pairwise accuracy on held-out items against that user's true utility.
//!
//! Input (safetensors): `response_emb` (or `emb`) `[N, d]`, `utility` `[U, N]` (user u's
//! true utility of item n, higher is better), optional `group` `[N]` (items that may be shown
//! together; absent = any training items). `prompt_emb` may be present and is not used (the
//! heads score responses).
//!
//! Per seed: users are split into federated and new users, item groups into train and test.
//! Each of `rounds` rounds, every federated user gets `turns / rounds` turns of `candidates`
//! training items, shown in the order of its current `personal` model (the logging policy;
//! every system then trains on that same log); it examines position k with probability
//! [`EXAMINE`]`[k]`, copies one examined answer drawn by Bradley–Terry on its standardised
//! utilities (with probability [`COPY_RATE`]), gives a thumbs up or down now and then (flipped
//! with probability [`THUMB_FLIP`]) and dwells longer on better answers. Then every system's
//! models train, and the federated systems merge their shared parts (each user's delta
//! clipped as the sync client does, FedAvg weighted by examples), each user keeping what
//! clipping held back and its personal part.

use std::ops::ControlFlow;

use ndarray::{Array2, ArrayView2, Axis};
use safetensors::SafeTensors;
use serde::Serialize;

use crate::backend::Device;
use crate::data::numbers;
use crate::error::{Error, Result};
use crate::feedback::events::{Event, Shown};
use crate::feedback::log::LoggedObservation;
use crate::feedback::{Examples, Pair};
use crate::head::{Activation, Head, HeadConfig};
use crate::model::{self, ModelSpec, Parts, RewardModel, TrainOptions};
use crate::objective::{ObjectiveConfig, ObjectiveKind};
use crate::personal::Personalization;
use crate::rng::Rng;
use crate::store::Weights;
use crate::sync::aggregate::{combine, AggregationConfig, Aggregator, Contribution, DpFedAvg};
use crate::sync::delta;
use crate::trainer::{self, TrainConfig, TrainRequest};

use super::Summary;

/// Probability that the user reads the answer at each display position.
pub const EXAMINE: [f64; 4] = [1.0, 0.7, 0.5, 0.35];
/// Probability that a turn ends with a copy of the Bradley–Terry winner among the read answers.
pub const COPY_RATE: f64 = 0.8;
/// Bradley–Terry slope on standardised utilities.
pub const BT_SCALE: f64 = 2.0;
/// Probability of a thumb on a read answer, and of that thumb being the wrong one.
pub const THUMB_RATE: f64 = 0.1;
pub const THUMB_FLIP: f64 = 0.1;

/// A multi-user data set.
#[derive(Debug, Clone)]
pub struct UsersData {
    pub emb: Array2<f32>,
    /// `[U, N]`.
    pub utility: Array2<f32>,
    pub group: Option<Vec<i64>>,
}

impl UsersData {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::InvalidData(m);
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let matrix = |name: &str| -> Result<Option<Array2<f32>>> {
            match numbers(&st, name)? {
                None => Ok(None),
                Some((shape, v)) if shape.len() == 2 => Ok(Some(
                    Array2::from_shape_vec(
                        (shape[0], shape[1]),
                        v.into_iter().map(|x| x as f32).collect(),
                    )
                    .expect("shape from header"),
                )),
                Some((shape, _)) => Err(bad(format!(
                    "tensor '{name}' must be 2-D, has shape {shape:?}"
                ))),
            }
        };
        let emb = match matrix("response_emb")? {
            Some(m) => m,
            None => matrix("emb")?
                .ok_or_else(|| bad("needs a 'response_emb' or 'emb' tensor [N, d]".into()))?,
        };
        let n = emb.nrows();
        if n == 0 || emb.ncols() == 0 {
            return Err(Error::Empty {
                what: "data set embeddings".into(),
            });
        }
        let utility = matrix("utility")?
            .ok_or_else(|| bad("the users protocol needs a 'utility' tensor [U, N]".into()))?;
        if utility.ncols() != n {
            return Err(Error::DimMismatch {
                what: "utility columns (one per item)".into(),
                expected: n,
                got: utility.ncols(),
            });
        }
        if utility.nrows() < 2 {
            return Err(bad(format!(
                "the users protocol needs at least 2 users, the file has {}",
                utility.nrows()
            )));
        }
        let group = match numbers(&st, "group")? {
            None => None,
            Some((shape, v)) if shape == [n] => Some(v.into_iter().map(|x| x as i64).collect()),
            Some((shape, _)) => {
                return Err(Error::DimMismatch {
                    what: format!("tensor 'group' (shape {shape:?}) rows"),
                    expected: n,
                    got: shape.first().copied().unwrap_or(0),
                })
            }
        };
        Ok(UsersData {
            emb,
            utility,
            group,
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > crate::data::MAX_DATA_BYTES {
            return Err(Error::InvalidData(format!(
                "{} is {len} bytes, over the limit",
                path.display()
            )));
        }
        Self::from_bytes(&std::fs::read(path).map_err(|e| Error::io(path, e))?)
    }

    pub fn users(&self) -> usize {
        self.utility.nrows()
    }

    /// Item groups (each item its own group without a `group` tensor), in first-seen order.
    fn groups(&self) -> Vec<Vec<usize>> {
        match &self.group {
            None => (0..self.emb.nrows()).map(|i| vec![i]).collect(),
            Some(g) => {
                let mut order: Vec<i64> = Vec::new();
                let mut members: std::collections::HashMap<i64, Vec<usize>> = Default::default();
                for (i, &id) in g.iter().enumerate() {
                    let e = members.entry(id).or_default();
                    if e.is_empty() {
                        order.push(id);
                    }
                    e.push(i);
                }
                order
                    .into_iter()
                    .map(|id| members.remove(&id).expect("seen"))
                    .collect()
            }
        }
    }
}

/// A row of the users table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Everyone scores with the shared model (FedAvg of everyone's updates).
    Global,
    /// Each user's model from its own feedback only, never synced.
    Local,
    /// The package's default (`Personalization::default_for` a head with a hidden layer): a
    /// shared taste basis synced, per-user coefficients on it kept on the device. Its shared
    /// head gets a hidden layer of `basis_width` when `hidden` is empty.
    Personal,
    /// A personal residual with an adaptive blend (the package's default on a linear head).
    Residual,
    /// The Ditto variant: the personal residual at a fixed blend of 1.
    Ditto,
    /// Two whole models, the user's own and the crowd's, mixed per user.
    Mix,
    /// One model trained centrally on every user's feedback.
    Pooled,
    /// A per-user head fitted to the user's true utilities of the training items.
    Oracle,
}

impl System {
    pub const ALL: [System; 8] = [
        System::Global,
        System::Local,
        System::Personal,
        System::Residual,
        System::Ditto,
        System::Mix,
        System::Pooled,
        System::Oracle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Global => "global",
            System::Local => "local",
            System::Personal => "personal",
            System::Residual => "residual",
            System::Ditto => "ditto",
            System::Mix => "mix",
            System::Pooled => "pooled",
            System::Oracle => "oracle",
        }
    }

    pub fn parse_list(list: &str) -> Result<Vec<System>> {
        if list.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
        let systems = list
            .split(',')
            .map(|s| {
                let s = s.trim();
                Self::ALL
                    .into_iter()
                    .find(|x| x.name() == s)
                    .ok_or_else(|| Error::unknown("system", s, &names))
            })
            .collect::<Result<Vec<_>>>()?;
        if systems.is_empty() {
            return Err(Error::Empty {
                what: "system list".into(),
            });
        }
        Ok(systems)
    }

    /// The personalization of this system's per-user models (federated systems and local).
    fn personalization(self) -> Personalization {
        match self {
            System::Personal => Personalization::default_for(&[crate::model::DEFAULT_HIDDEN]),
            System::Residual => Personalization::Residual,
            System::Ditto => Personalization::Ditto,
            System::Mix => Personalization::Mix,
            _ => Personalization::None,
        }
    }

    fn is_federated(self) -> bool {
        matches!(
            self,
            System::Global | System::Personal | System::Residual | System::Ditto | System::Mix
        )
    }
}

#[derive(Debug, Clone)]
pub struct UsersConfig {
    pub seeds: usize,
    /// Federated users (default: every user that is not a new user).
    pub users: Option<usize>,
    pub new_users: usize,
    /// Turns per federated user over all rounds.
    pub turns: usize,
    pub rounds: usize,
    pub candidates: usize,
    /// Turns a new user gets before it is scored.
    pub new_user_turns: Vec<usize>,
    /// Share of item groups held out for testing.
    pub test_fraction: f64,
    pub hidden: Vec<usize>,
    /// Non-linearity of the hidden layers (the `basis` system's included).
    pub activation: Activation,
    /// The hidden width of the `personal` system's shared head (the taste basis) when
    /// `hidden` is empty.
    pub basis_width: usize,
    /// The non-linearity of that hidden layer (`None`: `activation`).
    pub basis_activation: Option<Activation>,
    /// The replay window of every per-user model ([`ModelSpec::replay_turns`]): each
    /// training call trains on the user's last `replay_turns` turns (the new ones and, where
    /// they leave room, turns trained on before, kept on the device). `pooled` trains each
    /// round on every user's last `replay_turns` turns the same way. 0: each call trains on
    /// the turns since the last one.
    pub replay_turns: usize,
    pub objective: ObjectiveKind,
    /// Options of every training call (the personal pull among them).
    pub train: TrainOptions,
    /// The sync client's and server's clip of a delta.
    pub clip_norm: f64,
    /// Client-level DP-FedAvg on the federated systems' rounds (the server's, DESIGN §12):
    /// `None` is no noise.
    pub dp: Option<UsersDp>,
    pub systems: Vec<System>,
}

/// The privacy a run's rounds must stay within. Every federated user joins every round, so
/// the sampling rate is 1 (cohort = population: no amplification by sampling, the worst
/// case), and the noise multiplier is the smallest that keeps all the rounds within (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsersDp {
    pub epsilon: f64,
    pub delta: f64,
}

/// The DP of a run as it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AppliedDp {
    pub epsilon: f64,
    pub delta: f64,
    pub noise_multiplier: f64,
    pub sampling_rate: f64,
    pub rounds: usize,
}

impl Default for UsersConfig {
    fn default() -> Self {
        UsersConfig {
            seeds: 3,
            users: None,
            new_users: 8,
            turns: 120,
            rounds: 6,
            candidates: 4,
            new_user_turns: vec![0, 5, 10, 20, 40],
            test_fraction: 0.3,
            hidden: Vec::new(),
            activation: Activation::Relu,
            // The configuration the README's table was measured with: `tacit eval --protocol
            // users --data FILE` alone reproduces it.
            basis_width: 64,
            basis_activation: Some(Activation::Tanh),
            replay_turns: crate::model::DEFAULT_REPLAY_TURNS,
            objective: ObjectiveKind::Implicit,
            train: TrainOptions {
                epochs: 10,
                ..TrainOptions::default()
            },
            clip_norm: 10.0,
            dp: None,
            systems: System::ALL.to_vec(),
        }
    }
}

impl UsersConfig {
    fn validate(&self, data: &UsersData) -> Result<usize> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.seeds == 0 || self.rounds == 0 || self.turns < self.rounds {
            return bad(format!(
                "seeds ({}) and rounds ({}) must be ≥ 1 and turns ({}) ≥ rounds",
                self.seeds, self.rounds, self.turns
            ));
        }
        if !(2..=EXAMINE.len()).contains(&self.candidates) {
            return bad(format!(
                "candidates = {} is outside 2..={}",
                self.candidates,
                EXAMINE.len()
            ));
        }
        if !(0.05..=0.8).contains(&self.test_fraction) {
            return bad(format!(
                "test fraction {} is outside [0.05, 0.8]",
                self.test_fraction
            ));
        }
        if self.systems.is_empty() {
            return bad("no systems to evaluate".into());
        }
        if self.basis_width == 0 || self.basis_width > crate::head::MAX_WIDTH {
            return bad(format!(
                "basis width = {} is outside 1..={}",
                self.basis_width,
                crate::head::MAX_WIDTH
            ));
        }
        model::check_replay_turns(self.replay_turns)?;
        let u = data.users();
        if self.new_users >= u {
            return bad(format!(
                "{} new users leave no federated user among {u}",
                self.new_users
            ));
        }
        let federated = self.users.unwrap_or(u - self.new_users);
        if federated < 2 || federated + self.new_users > u {
            return bad(format!(
                "{federated} federated + {} new users: the file has {u} users (and at least 2 must be federated)",
                self.new_users
            ));
        }
        Ok(federated)
    }

    fn spec(&self, data: &UsersData, personalization: Personalization, seed: u64) -> ModelSpec {
        // `basis` reads the shared head's last hidden layer: it gets one if the others have none.
        let basis = personalization == Personalization::Basis;
        let hidden = if basis && self.hidden.is_empty() {
            vec![self.basis_width]
        } else {
            self.hidden.clone()
        };
        ModelSpec {
            dim: data.emb.ncols(),
            hidden,
            activation: match self.basis_activation {
                Some(a) if basis => a,
                _ => self.activation,
            },
            objective: self.objective,
            seed,
            personalization,
            // The protocol names its objective: every system trains on the same one.
            auto_objective: false,
            replay_turns: self.replay_turns,
        }
    }
}

/// Per system: per (seed, user) accuracies.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    pub pairwise_accuracy: Summary,
    /// Mean over users, per seed.
    #[serde(skip)]
    pub per_seed: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct UsersResult {
    /// The DP-FedAvg the federated systems' rounds ran under, if any.
    pub dp: Option<AppliedDp>,
    pub seeds: usize,
    pub users: usize,
    pub new_users: usize,
    pub systems: Vec<(System, SystemResult)>,
    /// Per k: per system.
    pub new_users_curve: Vec<(usize, Vec<(System, SystemResult)>)>,
}

fn result_of(values: &[Vec<f64>]) -> SystemResult {
    let all: Vec<f64> = values.iter().flatten().copied().collect();
    SystemResult {
        pairwise_accuracy: Summary::of(&all),
        per_seed: values
            .iter()
            .map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
            .collect(),
    }
}

/// The fraction of test pairs (ties in utility skipped) that `scores` orders as `utility` does;
/// tied scores count half.
pub fn pairwise_accuracy(scores: &[f32], utility: &[f32]) -> f64 {
    let (mut right, mut total) = (0.0, 0.0);
    for i in 0..scores.len() {
        for j in i + 1..scores.len() {
            let du = utility[i] - utility[j];
            if du == 0.0 {
                continue;
            }
            let ds = scores[i] - scores[j];
            total += 1.0;
            if ds == 0.0 {
                right += 0.5;
            } else if (ds > 0.0) == (du > 0.0) {
                right += 1.0;
            }
        }
    }
    if total == 0.0 {
        0.5
    } else {
        right / total
    }
}

/// One simulated user: its standardised utilities and its random stream.
struct User {
    index: usize,
    z: Vec<f64>,
    rng: Rng,
}

impl User {
    fn new(data: &UsersData, index: usize, seed: u64) -> Self {
        let row = data.utility.row(index);
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let sd = (row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n)
            .sqrt()
            .max(1e-12);
        User {
            index,
            z: row.iter().map(|&v| (v as f64 - mean) / sd).collect(),
            rng: Rng::new(seed ^ (index as u64).wrapping_mul(0x9E37_79B9)),
        }
    }

    /// The observations of one turn showing `items` in this order.
    fn react(&mut self, data: &UsersData, items: &[usize], turn: &str) -> Vec<LoggedObservation> {
        let k = items.len();
        let read: Vec<bool> = (0..k).map(|p| self.rng.uniform() < EXAMINE[p]).collect();
        let mut events: Vec<Vec<Event>> = vec![Vec::new(); k];
        let examined: Vec<usize> = (0..k).filter(|&p| read[p]).collect();
        if !examined.is_empty() && self.rng.uniform() < COPY_RATE {
            let w: Vec<f64> = examined
                .iter()
                .map(|&p| (BT_SCALE * self.z[items[p]]).exp())
                .collect();
            let mut r = self.rng.uniform() * w.iter().sum::<f64>();
            let mut pick = examined[examined.len() - 1];
            for (&p, &wp) in examined.iter().zip(&w) {
                if r < wp {
                    pick = p;
                    break;
                }
                r -= wp;
            }
            events[pick].push(Event::Copy);
        }
        let mut dwell = vec![200.0; k];
        for &p in &examined {
            let z = self.z[items[p]];
            if self.rng.uniform() < THUMB_RATE {
                let good = (z > 0.0) != (self.rng.uniform() < THUMB_FLIP);
                events[p].push(if good {
                    Event::ThumbsUp
                } else {
                    Event::ThumbsDown
                });
            }
            dwell[p] = 1500.0 * (0.4 * z + 0.3 * self.rng.normal()).exp();
        }
        (0..k)
            .map(|p| LoggedObservation {
                seq: 0,
                id: format!("u{}-{turn}-{}", self.index, items[p]),
                // Turns are the user's own: pooled training must not pair two users' answers.
                turn: Some(format!("u{}-{turn}", self.index)),
                embedding: data.emb.row(items[p]).to_vec(),
                shown: Shown {
                    position: p as u32,
                    candidates: k as u32,
                },
                events: std::mem::take(&mut events[p]),
                dwell_ms: dwell[p],
                length: 0.0,
                propensity: None,
            })
            .collect()
    }
}

/// Draws the candidates of a turn from the training groups.
fn draw_items(
    rng: &mut Rng,
    train_groups: &[Vec<usize>],
    train_items: &[usize],
    k: usize,
) -> Vec<usize> {
    let big: Vec<&Vec<usize>> = train_groups.iter().filter(|g| g.len() >= k).collect();
    let mut pool: Vec<usize> = if big.is_empty() {
        train_items.to_vec()
    } else {
        big[rng.below(big.len())].clone()
    };
    rng.shuffle(&mut pool);
    pool.truncate(k);
    pool
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    pollster::block_on(f)
}

fn scores(m: &RewardModel, x: ArrayView2<f32>) -> Result<Vec<f32>> {
    block(m.score(x, false))
}

fn observe_all(m: &mut RewardModel, obs: &[LoggedObservation]) -> Result<()> {
    for o in obs {
        m.observe(o.clone())?;
    }
    Ok(())
}

fn train(m: &mut RewardModel, opts: &TrainOptions) -> Result<()> {
    if m.pending().is_empty() {
        return Ok(());
    }
    let job = m.prepare_training(opts)?;
    let outcome = block(job.run(
        &mut |_| ControlFlow::Continue(()),
        || std::future::ready(()),
    ))?;
    m.apply(&outcome);
    Ok(())
}

/// One round of a federated system: every user's clipped delta from the global, FedAvg by
/// the server's code (DP-FedAvg with noise multiplier `dp_noise` when given: the clipped
/// deltas summed over the cohort plus Gaussian noise of `z·C`), and each user rebased on the
/// new global keeping what clipping held back.
fn federate(
    models: &mut [RewardModel],
    global: &mut Head,
    examples: &[u64],
    clip_norm: f64,
    dp_noise: Option<f64>,
    seed: u64,
) -> Result<()> {
    let mut contributions = Vec::new();
    let mut held_back = Vec::new();
    for (m, &n) in models.iter().zip(examples) {
        let full = delta::difference(&m.weights().head, global)?;
        let mut clipped = full.clone();
        delta::clip(&mut clipped, clip_norm)?;
        held_back.push(
            full.iter()
                .zip(&clipped)
                .map(|(f, c)| f - c)
                .collect::<Vec<f32>>(),
        );
        contributions.push(Contribution {
            delta: clipped,
            n_examples: n,
        });
    }
    let config = AggregationConfig {
        aggregator: Aggregator::Mean,
        clip_norm,
        noise_std: 0.0,
        weight_cap: 10_000,
        dp: dp_noise.map(|noise_multiplier| DpFedAvg {
            noise_multiplier,
            expected_cohort: models.len() as u64,
        }),
    };
    let step = combine(&contributions, global.num_params(), &config, seed);
    *global = delta::apply(global, &step)?;
    for (m, rest) in models.iter_mut().zip(held_back) {
        let head = delta::apply(global, &rest)?;
        let w = Weights {
            head,
            version: m.weights().version + 1,
            ..m.weights().clone()
        };
        m.replace_weights(w)?;
    }
    Ok(())
}

/// A per-user head fitted to the user's true utilities of `items`: pairwise on random pairs.
fn oracle(
    device: &Device,
    data: &UsersData,
    cfg: &UsersConfig,
    user: usize,
    items: &[usize],
    seed: u64,
) -> Result<Head> {
    let emb = data.emb.select(Axis(0), items);
    let u: Vec<f32> = items.iter().map(|&i| data.utility[[user, i]]).collect();
    let mut sorted = u.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    let labels: Vec<f32> = u.iter().map(|&v| (v > median) as u8 as f32).collect();
    let mut ex = Examples::fully_labelled(emb, labels);
    let mut rng = Rng::new(seed ^ 0x0AC1E);
    let n = items.len();
    for _ in 0..(20 * n).min(20_000) {
        let (a, b) = (rng.below(n), rng.below(n));
        if u[a] == u[b] {
            continue;
        }
        ex.pairs.push(if u[a] > u[b] {
            Pair::new(a, b)
        } else {
            Pair::new(b, a)
        });
    }
    let head_cfg = HeadConfig {
        outputs: 1,
        activation: cfg.activation,
        ..HeadConfig::new(data.emb.ncols(), &cfg.hidden)
    };
    let head = Head::init(&head_cfg, seed)?;
    let objective = ObjectiveConfig {
        kind: ObjectiveKind::Pairwise,
        ..ObjectiveConfig::default()
    };
    let tc = TrainConfig {
        epochs: 30,
        batch_size: 256,
        patience: 0,
        seed,
        ..TrainConfig::default()
    };
    let t = trainer::train_on(
        device,
        &TrainRequest::new(&head, &objective, &ex, &tc),
        &mut |_| ControlFlow::Continue(()),
    )?;
    Ok(t.head)
}

/// Runs the protocol on `device`; `log` hears of progress.
pub fn run_on(
    device: &Device,
    data: &UsersData,
    cfg: &UsersConfig,
    log: &mut dyn FnMut(&str),
) -> Result<UsersResult> {
    let federated = cfg.validate(data)?;
    let systems = &cfg.systems;
    // The accountant checks ε and δ (invalid_config) before anything is trained.
    let dp = match cfg.dp {
        Some(UsersDp { epsilon, delta }) => {
            let rounds = cfg.rounds as u64;
            Some(AppliedDp {
                epsilon,
                delta,
                noise_multiplier: crate::sync::privacy::noise_multiplier_for(
                    epsilon, 1.0, rounds, delta,
                )?,
                sampling_rate: 1.0,
                rounds: cfg.rounds,
            })
        }
        None => None,
    };
    if let Some(dp) = dp {
        log(&format!(
            "DP-FedAvg: noise multiplier {:.3} for (ε = {}, δ = {}) over {} rounds at q = 1",
            dp.noise_multiplier, dp.epsilon, dp.delta, dp.rounds
        ));
    }
    let mut fed_acc: Vec<Vec<Vec<f64>>> = vec![Vec::new(); systems.len()];
    let mut new_acc: Vec<Vec<Vec<Vec<f64>>>> =
        vec![vec![Vec::new(); systems.len()]; cfg.new_user_turns.len()];
    let opts = TrainOptions {
        objective: Some(cfg.objective),
        ..cfg.train.clone()
    };
    for s in 0..cfg.seeds {
        let seed = 2000 + s as u64;
        let mut rng = Rng::new(seed);
        let mut users: Vec<usize> = (0..data.users()).collect();
        rng.shuffle(&mut users);
        let new_ids: Vec<usize> = users[..cfg.new_users].to_vec();
        let fed_ids: Vec<usize> = users[cfg.new_users..cfg.new_users + federated].to_vec();
        let mut groups = data.groups();
        rng.shuffle(&mut groups);
        let n_test =
            ((groups.len() as f64 * cfg.test_fraction).round() as usize).clamp(1, groups.len() - 1);
        let test_items: Vec<usize> = groups[..n_test].iter().flatten().copied().collect();
        let train_groups: Vec<Vec<usize>> = groups[n_test..].to_vec();
        let train_items: Vec<usize> = train_groups.iter().flatten().copied().collect();
        let x_test = data.emb.select(Axis(0), &test_items);
        let truth =
            |u: usize| -> Vec<f32> { test_items.iter().map(|&i| data.utility[[u, i]]).collect() };

        // Per system, per federated user, its model; one global head per federated system.
        let mut models: Vec<Vec<RewardModel>> = Vec::new();
        let mut globals: Vec<Option<Head>> = Vec::new();
        for &sys in systems.iter() {
            let per_user = match sys {
                System::Pooled | System::Oracle => Vec::new(),
                _ => fed_ids
                    .iter()
                    .map(|_| {
                        // Federated users start from the same global; local ones each from their own.
                        let init_seed = if sys.is_federated() {
                            seed
                        } else {
                            seed ^ 0x10CA1
                        };
                        RewardModel::new(
                            &cfg.spec(data, sys.personalization(), init_seed),
                            device.clone(),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            globals.push(
                per_user
                    .first()
                    .filter(|_| sys.is_federated())
                    .map(|m| m.weights().head.clone()),
            );
            models.push(per_user);
        }
        // `pooled` is central training: the server holds every user's turns, and each round
        // trains on every user's last `replay_turns` turns (its own model keeps no window).
        let mut pooled = RewardModel::new(
            &ModelSpec {
                replay_turns: 0,
                ..cfg.spec(data, Personalization::None, seed)
            },
            device.clone(),
        )?;
        let mut pooled_turns: Vec<Vec<Vec<LoggedObservation>>> = vec![Vec::new(); fed_ids.len()];
        let logger = systems.iter().position(|&s| s == System::Personal);
        let mut sim: Vec<User> = fed_ids.iter().map(|&u| User::new(data, u, seed)).collect();
        let mut turn_rng = Rng::new(seed ^ 0x7E57);
        let per_round = cfg.turns / cfg.rounds;
        for round in 0..cfg.rounds {
            let mut examples = vec![0u64; fed_ids.len()];
            for (ui, user) in sim.iter_mut().enumerate() {
                let mut log_obs = Vec::new();
                let mut replayed = Vec::new();
                if cfg.replay_turns > per_round {
                    let held = &pooled_turns[ui];
                    let from = held.len().saturating_sub(cfg.replay_turns - per_round);
                    replayed = held[from..].concat();
                }
                for t in 0..per_round {
                    let mut items =
                        draw_items(&mut turn_rng, &train_groups, &train_items, cfg.candidates);
                    if let Some(l) = logger {
                        let x = data.emb.select(Axis(0), &items);
                        let s = scores(&models[l][ui], x.view())?;
                        let order = model::rank(&s);
                        items = order.iter().map(|&o| items[o as usize]).collect();
                    }
                    let turn = user.react(data, &items, &format!("r{round}t{t}"));
                    log_obs.extend(turn.iter().cloned());
                    if cfg.replay_turns > 0 {
                        pooled_turns[ui].push(turn);
                    }
                }
                examples[ui] = log_obs.len() as u64;
                for (si, &sys) in systems.iter().enumerate() {
                    if matches!(sys, System::Pooled | System::Oracle) {
                        continue;
                    }
                    observe_all(&mut models[si][ui], &log_obs)?;
                    train(&mut models[si][ui], &opts)?;
                }
                observe_all(&mut pooled, &replayed)?;
                observe_all(&mut pooled, &log_obs)?;
            }
            if systems.contains(&System::Pooled) {
                train(&mut pooled, &opts)?;
            }
            for (si, &sys) in systems.iter().enumerate() {
                if let Some(g) = globals[si].as_mut() {
                    federate(
                        &mut models[si],
                        g,
                        &examples,
                        cfg.clip_norm,
                        dp.map(|d| d.noise_multiplier),
                        seed + round as u64,
                    )?;
                }
                let _ = sys;
            }
            log(&format!("seed {s} round {} of {}", round + 1, cfg.rounds));
        }

        // Federated users on the test items.
        for (si, &sys) in systems.iter().enumerate() {
            let mut accs = Vec::new();
            for (ui, &u) in fed_ids.iter().enumerate() {
                let s = match sys {
                    System::Pooled => scores(&pooled, x_test.view())?,
                    System::Oracle => {
                        let h = oracle(device, data, cfg, u, &train_items, seed)?;
                        device.score(&h, x_test.view())?
                    }
                    System::Global => {
                        device.score(&models[si][ui].weights().head, x_test.view())?
                    }
                    _ => scores(&models[si][ui], x_test.view())?,
                };
                accs.push(pairwise_accuracy(&s, &truth(u)));
            }
            let parts: Vec<(f32, f64)> = models[si]
                .iter()
                .filter_map(|m| m.weights().personal.as_ref().map(|p| (p.blend, p.share)))
                .collect();
            let blends = if parts.is_empty() {
                String::new()
            } else {
                format!(
                    " (mean blend {:.2}, personal share {:.2})",
                    parts.iter().map(|p| p.0 as f64).sum::<f64>() / parts.len() as f64,
                    parts.iter().map(|p| p.1).sum::<f64>() / parts.len() as f64
                )
            };
            log(&format!(
                "seed {s} {:<8} federated users: {:.4}{blends}",
                sys.name(),
                accs.iter().sum::<f64>() / accs.len() as f64
            ));
            fed_acc[si].push(accs);
        }

        // New users: k turns on top of each system's final shared model (logged in the order of
        // the personal system's shared model with a fresh personal part).
        let max_k = cfg.new_user_turns.iter().copied().max().unwrap_or(0);
        let mut per_k: Vec<Vec<Vec<f64>>> =
            vec![vec![Vec::new(); systems.len()]; cfg.new_user_turns.len()];
        for &v in &new_ids {
            let mut user = User::new(data, v, seed ^ 0x4E3);
            let fresh = |sys: System, si: usize| -> Result<RewardModel> {
                let mut m =
                    RewardModel::new(&cfg.spec(data, sys.personalization(), seed), device.clone())?;
                if let Some(g) = &globals[si] {
                    let w = Weights {
                        head: g.clone(),
                        ..m.weights().clone()
                    };
                    m.replace_weights(w)?;
                }
                Ok(m)
            };
            let logger_model = match logger {
                Some(l) => Some(fresh(System::Personal, l)?),
                None => None,
            };
            let mut turns: Vec<Vec<LoggedObservation>> = Vec::new();
            for t in 0..max_k {
                let mut items =
                    draw_items(&mut turn_rng, &train_groups, &train_items, cfg.candidates);
                if let Some(m) = &logger_model {
                    let x = data.emb.select(Axis(0), &items);
                    let order = model::rank(&scores(m, x.view())?);
                    items = order.iter().map(|&o| items[o as usize]).collect();
                }
                turns.push(user.react(data, &items, &format!("new{t}")));
            }
            let oracle_head = if systems.contains(&System::Oracle) {
                Some(oracle(device, data, cfg, v, &train_items, seed)?)
            } else {
                None
            };
            for (ki, &k) in cfg.new_user_turns.iter().enumerate() {
                let obs: Vec<LoggedObservation> = turns[..k].iter().flatten().cloned().collect();
                for (si, &sys) in systems.iter().enumerate() {
                    let s = match sys {
                        System::Global => {
                            let g = globals[si].as_ref().expect("a federated system");
                            device.score(g, x_test.view())?
                        }
                        System::Pooled => scores(&pooled, x_test.view())?,
                        System::Oracle => {
                            device.score(oracle_head.as_ref().expect("built"), x_test.view())?
                        }
                        System::Local => {
                            let mut m = RewardModel::new(
                                &cfg.spec(data, Personalization::None, seed ^ 0x10CA1),
                                device.clone(),
                            )?;
                            observe_all(&mut m, &obs)?;
                            train(&mut m, &opts)?;
                            scores(&m, x_test.view())?
                        }
                        System::Personal | System::Residual | System::Ditto | System::Mix => {
                            let mut m = fresh(sys, si)?;
                            observe_all(&mut m, &obs)?;
                            train(
                                &mut m,
                                &TrainOptions {
                                    parts: Parts::Personal,
                                    ..opts.clone()
                                },
                            )?;
                            scores(&m, x_test.view())?
                        }
                    };
                    per_k[ki][si].push(pairwise_accuracy(&s, &truth(v)));
                }
            }
        }
        for (ki, rows) in per_k.into_iter().enumerate() {
            for (si, accs) in rows.into_iter().enumerate() {
                new_acc[ki][si].push(accs);
            }
        }
    }
    Ok(UsersResult {
        dp,
        seeds: cfg.seeds,
        users: federated,
        new_users: cfg.new_users,
        systems: systems
            .iter()
            .zip(&fed_acc)
            .map(|(&s, v)| (s, result_of(v)))
            .collect(),
        new_users_curve: cfg
            .new_user_turns
            .iter()
            .zip(&new_acc)
            .map(|(&k, rows)| {
                (
                    k,
                    systems
                        .iter()
                        .zip(rows)
                        .map(|(&s, v)| (s, result_of(v)))
                        .collect(),
                )
            })
            .collect(),
    })
}

impl UsersResult {
    /// The JSON of `--json`, exactly the shape the protocol documents.
    pub fn to_json(&self) -> String {
        let table = |rows: &[(System, SystemResult)]| {
            let mut m = serde_json::Map::new();
            for (s, r) in rows {
                m.insert(
                    s.name().into(),
                    serde_json::json!({ "pairwise_accuracy": r.pairwise_accuracy }),
                );
            }
            serde_json::Value::Object(m)
        };
        let mut curve = serde_json::Map::new();
        for (k, rows) in &self.new_users_curve {
            curve.insert(k.to_string(), table(rows));
        }
        serde_json::to_string_pretty(&serde_json::json!({
            "protocol": "users",
            "dp": self.dp,
            "seeds": self.seeds,
            "users": self.users,
            "new_users": self.new_users,
            "systems": table(&self.systems),
            "new_users_curve": curve,
        }))
        .expect("json")
    }

    pub fn system(&self, s: System) -> Option<&SystemResult> {
        self.systems.iter().find(|(x, _)| *x == s).map(|(_, r)| r)
    }

    /// The markdown tables: federated users (mean ± std over users and seeds, the spread of
    /// the per-seed means, and `personal`'s per-seed margin over each system) and the new-user
    /// curve; plus the share of the gap from max(global, local) to the oracle that `personal`
    /// closes.
    pub fn markdown(&self) -> String {
        let f = |s: &Summary| format!("{:.3} ± {:.3}", s.mean, s.std);
        let personal = self.system(System::Personal);
        let margin = |r: &SystemResult| -> String {
            match personal {
                Some(p) => {
                    let d: Vec<f64> = p
                        .per_seed
                        .iter()
                        .zip(&r.per_seed)
                        .map(|(a, b)| a - b)
                        .collect();
                    let s = Summary::of(&d);
                    format!("{:+.3} ± {:.3}", s.mean, s.std)
                }
                None => "—".into(),
            }
        };
        let mut out = String::new();
        if let Some(dp) = self.dp {
            out.push_str(&format!(
                "DP-FedAvg on the federated systems' rounds: (ε = {}, δ = {}) over {} rounds at q = {}, noise multiplier {:.3}.\n\n",
                dp.epsilon, dp.delta, dp.rounds, dp.sampling_rate, dp.noise_multiplier
            ));
        }
        out.push_str(
            "| system | pairwise accuracy (users × seeds) | seed spread of the mean | personal − system (per seed) |\n|---|---|---|---|\n",
        );
        for (s, r) in &self.systems {
            out.push_str(&format!(
                "| {} | {} | {:.3} | {} |\n",
                s.name(),
                f(&r.pairwise_accuracy),
                Summary::of(&r.per_seed).std,
                if *s == System::Personal {
                    "—".into()
                } else {
                    margin(r)
                }
            ));
        }
        if let (Some(p), Some(g), Some(l), Some(o)) = (
            personal,
            self.system(System::Global),
            self.system(System::Local),
            self.system(System::Oracle),
        ) {
            let base = g.pairwise_accuracy.mean.max(l.pairwise_accuracy.mean);
            let gap = o.pairwise_accuracy.mean - base;
            if gap > 0.0 {
                out.push_str(&format!(
                    "\n`personal` closes {:.0}% of the gap from max(global, local) = {base:.3} to the oracle's {:.3}.\n",
                    100.0 * (p.pairwise_accuracy.mean - base) / gap,
                    o.pairwise_accuracy.mean
                ));
            }
        }
        out.push_str("\nNew users, pairwise accuracy after k turns on top of the final shared model (mean ± std over users and seeds, and in brackets the seed spread of the mean):\n\n| k |");
        for (s, _) in &self.systems {
            out.push_str(&format!(" {} |", s.name()));
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(self.systems.len()));
        out.push('\n');
        for (k, rows) in &self.new_users_curve {
            out.push_str(&format!("| {k} |"));
            for (_, r) in rows {
                out.push_str(&format!(
                    " {} [{:.3}] |",
                    f(&r.pairwise_accuracy),
                    Summary::of(&r.per_seed).std
                ));
            }
            out.push('\n');
        }
        out.push_str(&self.margins_markdown());
        out
    }

    /// Each personal design's margin over `global` and `local`, seed by seed (the difference
    /// of the per-seed means over users): mean ± std over seeds and the smallest, on
    /// federated users and on new users at each k.
    fn margins_markdown(&self) -> String {
        let designs = [
            System::Personal,
            System::Residual,
            System::Ditto,
            System::Mix,
        ];
        let rows_of = |rows: &[(System, SystemResult)], s: System| {
            rows.iter()
                .find(|(x, _)| *x == s)
                .map(|(_, r)| r.per_seed.clone())
        };
        let cell = |a: Option<Vec<f64>>, b: Option<Vec<f64>>| -> String {
            match (a, b) {
                (Some(a), Some(b)) if !a.is_empty() => {
                    let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
                    let s = Summary::of(&d);
                    let min = d.iter().copied().fold(f64::INFINITY, f64::min);
                    format!("{:+.3} ± {:.3} (min {min:+.3})", s.mean, s.std)
                }
                _ => "—".into(),
            }
        };
        let mut out = String::new();
        let mut header = false;
        for d in designs {
            for base in [System::Global, System::Local] {
                if self.system(d).is_none() || self.system(base).is_none() {
                    continue;
                }
                if !header {
                    header = true;
                    out.push_str(
                        "\nMargins seed by seed (design − baseline, per-seed means over users: mean ± std over seeds, and the smallest):\n\n| design − baseline | federated |",
                    );
                    for (k, _) in &self.new_users_curve {
                        out.push_str(&format!(" new, k = {k} |"));
                    }
                    out.push_str("\n|---|---|");
                    out.push_str(&"---|".repeat(self.new_users_curve.len()));
                    out.push('\n');
                }
                out.push_str(&format!(
                    "| {} − {} | {} |",
                    d.name(),
                    base.name(),
                    cell(rows_of(&self.systems, d), rows_of(&self.systems, base))
                ));
                for (_, rows) in &self.new_users_curve {
                    out.push_str(&format!(
                        " {} |",
                        cell(rows_of(rows, d), rows_of(rows, base))
                    ));
                }
                out.push('\n');
            }
        }
        out
    }
}
