//! The reward model as an app holds it: a head on a device, the log of observations not yet
//! trained on, and the last training summary. This is the logic behind the browser package
//! (`src/web/` only converts and persists) and it works the same natively.
//!
//! Training is split in three so that a host with one thread (a page) never holds the model
//! borrowed across an `await`: [`RewardModel::prepare_training`] snapshots the head and the
//! pending log into a [`TrainJob`]; the job runs without the model; [`RewardModel::apply`]
//! installs the result and drops exactly the observations the job trained on, so that
//! observations made meanwhile stay pending.

use std::ops::ControlFlow;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::backend::placement::{Placement, Served, ServedBecause, ServedOn};
use crate::backend::Device;
use crate::error::{check, Error, Result};
use crate::feedback::log::{to_examples, LoggedObservation};
use crate::feedback::Examples;
use crate::head::{Activation, Head, HeadConfig};
use crate::objective::{ObjectiveConfig, ObjectiveKind};
use crate::optim::AdamWConfig;
use crate::personal::{self, Personal, PersonalRun, Personalization};
use crate::rng::Rng;
use crate::store::{self, Weights};
use crate::trainer::{self, EpochReport, TrainConfig, TrainReport, TrainRequest};

/// How to make a new model (what `RewardModel.open` takes besides its name and backend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelSpec {
    /// Embedding width.
    pub dim: usize,
    /// Hidden layer sizes (empty = a linear head).
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// The objective `train` uses unless told otherwise; it fixes the head's outputs.
    pub objective: ObjectiveKind,
    /// Choose the objective per training call from the pending observations' signals
    /// ([`crate::objective::choice`]; the package's `objective: "auto"`) instead of always
    /// `objective`, which then only fixes the head's (one) output.
    pub auto_objective: bool,
    /// Seed of the initial weights.
    pub seed: u64,
    /// The personal part kept beside the shared head (`crate::personal`); `none` gives the
    /// shared model alone. Default: [`Personalization::default_for`] the default head
    /// (`basis`); a spec of a linear head should name `residual` (the package does so itself).
    /// A spec stored before the field existed reads as `residual`, the part it opened with then.
    #[serde(default = "stored_before_the_default_changed")]
    pub personalization: Personalization,
    /// The replay window: how many of the user's most recent turns a training call trains
    /// on, counting the pending ones ([`RewardModel::prepare_training`]). Trained turns are
    /// kept on the device (with the model's state, never in a sync) until newer ones push
    /// them out; 0 keeps none: a call trains on the pending observations alone. Default:
    /// [`DEFAULT_REPLAY_TURNS`]. A spec stored before the field existed reads as 0 (no
    /// window), as it opened then.
    #[serde(default)]
    pub replay_turns: usize,
}

/// What a stored spec without a `personalization` field was opened with: the default of the
/// version that wrote it.
fn stored_before_the_default_changed() -> Personalization {
    Personalization::Residual
}

/// [`ModelSpec::replay_turns`] unless told otherwise: the user's last 40 turns. A synced
/// personal part otherwise sees each turn in one call of a handful of turns and falls behind
/// its user (the multi-user protocol without the window: README, "Personalization"); 40 turns
/// of four 384-d answers keep at most 160 observations, about 250 KB, on the device.
pub const DEFAULT_REPLAY_TURNS: usize = 40;
/// The default head's one hidden layer.
pub const DEFAULT_HIDDEN: usize = 128;
/// The largest replay window, in turns.
pub const MAX_REPLAY_TURNS: usize = 1000;
/// A window of `n` turns holds at most `n` × this many observations (the oldest go first):
/// a turn's observations are the answers shown together, four in the demo.
pub const REPLAY_OBSERVATIONS_PER_TURN: usize = 16;

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            dim: 384,
            hidden: vec![DEFAULT_HIDDEN],
            activation: Activation::Relu,
            objective: ObjectiveKind::Implicit,
            auto_objective: false,
            seed: 0,
            personalization: Personalization::default_for(&[DEFAULT_HIDDEN]),
            replay_turns: DEFAULT_REPLAY_TURNS,
        }
    }
}

/// Checks a replay window size (`replayTurns`).
pub fn check_replay_turns(turns: usize) -> Result<()> {
    if turns > MAX_REPLAY_TURNS {
        return Err(Error::InvalidConfig(format!(
            "replayTurns = {turns} is above {MAX_REPLAY_TURNS}"
        )));
    }
    Ok(())
}

impl ModelSpec {
    pub fn head_config(&self) -> HeadConfig {
        HeadConfig {
            dim: self.dim,
            hidden: self.hidden.clone(),
            activation: self.activation,
            outputs: self.objective.head_outputs(),
        }
    }
}

/// Options of one training call, with the defaults an app wants for a few hundred
/// observations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TrainOptions {
    /// Defaults to the model's objective.
    pub objective: Option<ObjectiveKind>,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Share of turns held out for early stopping (0 = none; ignored below 10 observations).
    pub validation_fraction: f64,
    pub patience: usize,
    pub seed: u64,
    /// Propensities are clipped below at this before inverse weighting.
    pub propensity_clip: f64,
    /// Which parts the call trains (a model without a personal part trains its shared head).
    pub parts: Parts,
    /// Pull of the personal part toward zero, i.e. toward the shared model (its weight decay).
    pub personal_pull: f64,
}

/// The parts of a two-part model a training call moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parts {
    /// The personal part on the shared scores, then the shared part on the personal ones.
    #[default]
    Both,
    /// The personal part only (the shared head stays as the last sync left it).
    Personal,
    /// The shared head only.
    Shared,
}

impl Parts {
    fn personal(self) -> bool {
        self != Parts::Shared
    }
    fn shared(self) -> bool {
        self != Parts::Personal
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        let t = TrainConfig::default();
        TrainOptions {
            objective: None,
            epochs: 5,
            batch_size: t.batch_size,
            learning_rate: t.optimizer.lr,
            weight_decay: t.optimizer.weight_decay,
            validation_fraction: 0.2,
            patience: 3,
            seed: 0,
            propensity_clip: ObjectiveConfig::default().propensity_clip,
            parts: Parts::Both,
            personal_pull: personal::DEFAULT_PULL,
        }
    }
}

/// What the model remembers of its training calls: stored beside the weights by a host
/// (the browser's model record), so that `stats()` after a reload says what it said before.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingHistory {
    /// Observations trained on since the model was made (or reset, or forgotten).
    pub trained_examples: u64,
    /// Last epoch's training loss of the last training call.
    pub last_loss: Option<f64>,
    /// Kish's effective sample size of the last training call's importance weights.
    pub effective_sample_size: Option<f64>,
}

/// What an app may ask of the model at any time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Observations logged and not yet trained on.
    pub pending: usize,
    /// Trained observations kept in the replay window (trained on again by the next call).
    pub replay: usize,
    /// Kish's effective sample size of the last training call's importance weights.
    pub effective_sample_size: Option<f64>,
    /// Last epoch's training loss of the last training call.
    pub last_loss: Option<f64>,
    /// Observations trained on since the model was made.
    pub trained_examples: u64,
    /// The sync base version of the weights (0 = never synced).
    pub version: u64,
    /// The personal part, if the model keeps one.
    pub personal: Option<PersonalStats>,
    /// Which device served the last scoring call and why (none before the first).
    #[serde(default)]
    pub last_score: Option<Served>,
}

/// How much of the score is the user's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonalStats {
    pub kind: Personalization,
    /// The weight of the shared score in `blend·shared + personal`.
    pub blend: f32,
    /// The personal part's share of the score magnitude on the last training call's rows,
    /// `Σ|personal| / (Σ|blend·shared| + Σ|personal|)`: 0 = the crowd's model, 1 = the user's own.
    pub share: f64,
    /// Observations the personal part has trained on.
    pub trained_examples: u64,
}

/// A training call detached from the model: it owns everything it needs.
pub struct TrainJob {
    device: Device,
    head: Head,
    exposure: Option<Head>,
    personal: Option<Personal>,
    parts: Parts,
    personal_pull: f64,
    objective: ObjectiveConfig,
    train: Examples,
    val: Option<Examples>,
    config: TrainConfig,
    /// The sequence numbers of the log entries that are the job's data (another tab's
    /// entries, which this model never held, may interleave with them in a shared store:
    /// the host deletes exactly these).
    trained_seqs: Vec<u64>,
    /// Replayed observations among the job's data (before the pending ones).
    replayed: usize,
    /// The replay window once the job is applied.
    replay: Vec<LoggedObservation>,
}

/// A finished job, ready for [`RewardModel::apply`].
pub struct TrainOutcome {
    pub report: TrainReport,
    /// Exactly the log entries trained on: what the host deletes from its persistent log in
    /// the same transaction that stores the new weights (other tabs of the same model may
    /// write to that log too).
    pub trained_seqs: Vec<u64>,
    head: Head,
    exposure_head: Option<Head>,
    personal: Option<Personal>,
    kind: ObjectiveKind,
    replayed: usize,
    replay: Vec<LoggedObservation>,
}

impl TrainOutcome {
    pub fn objective(&self) -> ObjectiveKind {
        self.kind
    }

    /// New observations the call trained on (the pending ones; replayed ones not counted).
    pub fn examples(&self) -> usize {
        self.trained_seqs.len()
    }

    /// Observations of the replay window the call trained on again.
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// The replay window once the outcome is applied: what a host stores with the trained
    /// weights, in the same transaction (it never leaves the device).
    pub fn replay(&self) -> &[LoggedObservation] {
        &self.replay
    }
}

impl TrainJob {
    /// New (pending) observations the job trains on.
    pub fn examples(&self) -> usize {
        self.trained_seqs.len()
    }

    /// Replayed observations the job trains on again.
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// Runs the job; `progress` sees every epoch, `between_epochs` lets the host yield.
    pub async fn run<Y: std::future::Future<Output = ()>>(
        self,
        progress: &mut dyn FnMut(&EpochReport) -> ControlFlow<()>,
        mut between_epochs: impl FnMut() -> Y,
    ) -> Result<TrainOutcome> {
        let device = &self.device;
        // One progress scale for the whole call: the personal runs, then the shared one.
        let epochs = self.config.epochs.max(1) as f64;
        let personal_runs = match (&self.personal, self.parts.personal()) {
            (Some(p), true) => personal::planned_runs(p, self.val.is_some()),
            _ => 0,
        } as f64;
        let total = (personal_runs + self.parts.shared() as u8 as f64) * epochs;
        let personal_span = personal_runs * epochs / total.max(1.0);
        let mut cancelled = false;
        // The personal part first, on the shared scores as they are: what it learns is the
        // user's own, and the shared part then learns the rest.
        let personal = match (&self.personal, self.parts.personal()) {
            (Some(p), true) => {
                let shared_train = device
                    .score_async(&self.head, self.train.emb.view())
                    .await?;
                let shared_val = match &self.val {
                    Some(v) => Some(device.score_async(&self.head, v.emb.view()).await?),
                    None => None,
                };
                let run = PersonalRun {
                    shared: &self.head,
                    objective: &self.objective,
                    train: &self.train,
                    val: self.val.as_ref(),
                    shared_train: &shared_train,
                    shared_val: shared_val.as_deref(),
                    config: &self.config,
                    pull: self.personal_pull,
                };
                let mut scaled = |e: &EpochReport| {
                    progress(&EpochReport {
                        fraction: e.fraction * personal_span,
                        ..e.clone()
                    })
                };
                let out =
                    personal::train(device, p, &run, &mut scaled, &mut between_epochs).await?;
                cancelled = out.cancelled;
                Some(out.personal)
            }
            (p, _) => p.clone(),
        };
        // A stop asked for during the personal phase keeps what it trained and leaves the
        // shared head as it was.
        if !self.parts.shared() || cancelled {
            let report = trainer::TrainReport {
                cancelled,
                ..Default::default()
            };
            return Ok(TrainOutcome {
                report,
                head: self.head,
                exposure_head: self.exposure,
                personal,
                kind: self.objective.kind,
                trained_seqs: self.trained_seqs.clone(),
                replayed: self.replayed,
                replay: self.replay.clone(),
            });
        }
        // The shared part with the personal residual as a fixed offset (`mix` keeps two
        // whole models: its shared part trains on its own; `basis` trains the shared head with
        // the personal coefficients folded into its output layer, then takes them out).
        let folded = personal
            .as_ref()
            .filter(|p| p.kind == Personalization::Basis)
            .map(|p| p.fold(&self.head));
        let with_residual = |ex: &Examples| -> Result<Examples> {
            Ok(match &personal {
                Some(p) if p.kind.trains_on_offsets() && folded.is_none() => ex
                    .clone()
                    .with_offset(p.residual(&self.head, ex.emb.view())?),
                _ => ex.clone(),
            })
        };
        let train = with_residual(&self.train)?;
        let val = self.val.as_ref().map(with_residual).transpose()?;
        let request = TrainRequest {
            head: folded.as_ref().unwrap_or(&self.head),
            objective: &self.objective,
            train: &train,
            val: val.as_ref(),
            config: &self.config,
        };
        let on_the_call = |fraction: f64| personal_span + fraction * (1.0 - personal_span);
        let mut scaled = |e: &EpochReport| {
            progress(&EpochReport {
                fraction: on_the_call(e.fraction),
                ..e.clone()
            })
        };
        let mut trained =
            trainer::train_async(device, &request, &mut scaled, between_epochs).await?;
        // The report lists the epochs as `progress` heard them.
        for e in &mut trained.report.epochs {
            e.fraction = on_the_call(e.fraction);
        }
        let head = match (&personal, &folded) {
            (Some(p), Some(_)) => p.unfold(&trained.head),
            _ => trained.head,
        };
        Ok(TrainOutcome {
            report: trained.report,
            head,
            exposure_head: trained.exposure_head,
            personal,
            kind: self.objective.kind,
            trained_seqs: self.trained_seqs.clone(),
            replayed: self.replayed,
            replay: self.replay,
        })
    }
}

#[derive(Debug)]
pub struct RewardModel {
    weights: Weights,
    device: Device,
    log: Vec<LoggedObservation>,
    next_seq: u64,
    /// The replay window: trained observations kept for later calls, oldest first, at most
    /// `replay_turns` turns ([`ModelSpec::replay_turns`]).
    replay: Vec<LoggedObservation>,
    replay_turns: usize,
    default_objective: ObjectiveKind,
    /// [`ModelSpec::auto_objective`].
    auto_objective: bool,
    history: TrainingHistory,
    /// Which device serves each scoring call (DESIGN §11), and what served the last one.
    placement: Placement,
    last_served: Option<Served>,
}

impl RewardModel {
    /// A fresh model.
    pub fn new(spec: &ModelSpec, device: Device) -> Result<Self> {
        check_replay_turns(spec.replay_turns)?;
        let head = Head::init(&spec.head_config(), spec.seed)?;
        let personal = match spec.personalization {
            Personalization::None => None,
            kind => Some(Personal::new(kind, &head.config)?),
        };
        let mut m = Self::from_parts(
            Weights {
                personal,
                ..Weights::new(head)
            },
            spec.objective,
            Vec::new(),
            device,
        );
        m.auto_objective = spec.auto_objective;
        m.replay_turns = spec.replay_turns;
        Ok(m)
    }

    /// A model restored from stored weights and log (the log is re-validated: entries that
    /// no longer fit the head are refused, not silently dropped).
    pub fn restore(
        weights: Weights,
        default_objective: ObjectiveKind,
        log: Vec<LoggedObservation>,
        device: Device,
    ) -> Result<Self> {
        for e in &log {
            e.validate(weights.head.config.dim)?;
        }
        if let Some(p) = &weights.personal {
            p.validate(&weights.head.config)?;
        }
        Ok(Self::from_parts(weights, default_objective, log, device))
    }

    fn from_parts(
        weights: Weights,
        default_objective: ObjectiveKind,
        mut log: Vec<LoggedObservation>,
        device: Device,
    ) -> Self {
        crate::math::sort_by(&mut log, |a, b| a.seq.cmp(&b.seq));
        let next_seq = log.last().map_or(0, |e| e.seq + 1);
        RewardModel {
            weights,
            device,
            log,
            next_seq,
            replay: Vec::new(),
            replay_turns: DEFAULT_REPLAY_TURNS,
            default_objective,
            auto_objective: false,
            history: TrainingHistory::default(),
            placement: Placement::Fixed,
            last_served: None,
        }
    }

    pub fn config(&self) -> &HeadConfig {
        &self.weights.head.config
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Switches device (the browser falls back to the CPU when its GPU device is lost).
    pub fn set_device(&mut self, device: Device) {
        self.device = device;
    }

    /// Whether training calls without an objective choose one from the pending signals.
    pub fn set_auto_objective(&mut self, auto: bool) {
        self.auto_objective = auto;
    }

    /// The objective a training call with `options` uses: the one it names, else the one the
    /// pending observations' signals call for (under `auto_objective`), else the model's.
    pub fn objective_for(&self, options: &TrainOptions) -> ObjectiveKind {
        match options.objective {
            Some(kind) => kind,
            None if self.auto_objective && self.config().outputs == 1 => {
                crate::objective::choice::for_signals(&self.log)
            }
            None => self.default_objective,
        }
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// How scoring calls are placed between the CPU path and the model's GPU (`auto`'s
    /// calibrated crossover; the default serves every call on the model's device).
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// Records what served a scoring call, for [`RewardModel::stats`] (a host that scores
    /// from a snapshot, as the browser does, reports it back this way).
    pub fn note_served(&mut self, served: Served) {
        self.last_served = Some(served);
    }

    pub fn pending(&self) -> &[LoggedObservation] {
        &self.log
    }

    /// The replay window: trained observations a later training call trains on again,
    /// oldest first. A host stores it with the weights (it is the user's own feedback: never
    /// exported with the weights, never in a sync request) and [`RewardModel::forget`]
    /// empties it.
    pub fn replay(&self) -> &[LoggedObservation] {
        &self.replay
    }

    /// [`ModelSpec::replay_turns`].
    pub fn replay_turns(&self) -> usize {
        self.replay_turns
    }

    /// Resizes the replay window (a smaller one drops its oldest turns at once). On error
    /// nothing changes.
    pub fn set_replay_turns(&mut self, turns: usize) -> Result<()> {
        check_replay_turns(turns)?;
        self.replay_turns = turns;
        self.replay = window(&self.replay, turns);
        Ok(())
    }

    /// Puts back a stored replay window (re-validated: an entry that no longer fits the head
    /// is refused; a window larger than the model's is trimmed to its newest turns). On error
    /// nothing changes.
    pub fn restore_replay(&mut self, mut entries: Vec<LoggedObservation>) -> Result<()> {
        for e in &entries {
            e.validate(self.config().dim)?;
        }
        crate::math::sort_by(&mut entries, |a, b| a.seq.cmp(&b.seq));
        if let Some(last) = entries.last() {
            // Sequence numbers are never reused, the window's included.
            self.skip_seq_past(last.seq);
        }
        self.replay = window(&entries, self.replay_turns);
        Ok(())
    }

    /// Checks `flat` as `n × dim` embeddings and returns it as a matrix view.
    pub fn embeddings<'a>(&self, flat: &'a [f32]) -> Result<ArrayView2<'a, f32>> {
        embeddings(self.config().dim, flat)
    }

    /// Validates an observation and assigns its sequence number; nothing is logged on error.
    /// The caller persists the returned entry before acknowledging it to the app.
    pub fn observe(&mut self, mut entry: LoggedObservation) -> Result<LoggedObservation> {
        entry.seq = self.next_seq;
        entry.validate(self.config().dim)?;
        self.next_seq += 1;
        self.log.push(entry.clone());
        Ok(entry)
    }

    /// Moves the next sequence number past `seq` (a store shared with another tab already
    /// holds `seq`: the next entry must not overwrite it).
    pub fn skip_seq_past(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
    }

    /// Forgets a logged entry (when persisting it failed, so it was never acknowledged).
    pub fn unobserve(&mut self, seq: u64) {
        self.log.retain(|e| e.seq != seq);
    }

    /// Snapshots the pending log and the head into a job.
    pub fn prepare_training(&self, options: &TrainOptions) -> Result<TrainJob> {
        let kind = self.objective_for(options);
        // The objective fixes the head's outputs when the model is made: asking for one of
        // another shape is a choice to correct, not a dimension bug (`beta` has two).
        let outputs = self.config().outputs;
        if kind.head_outputs() != outputs {
            let fits: Vec<&str> = ObjectiveKind::ALL
                .iter()
                .filter(|k| k.head_outputs() == outputs)
                .map(|k| k.name())
                .collect();
            return Err(Error::InvalidConfig(format!(
                "objective '{kind}' needs a head with {} outputs; this model was made for '{}' \
                 ({outputs} output{}): open a model with objective '{kind}', or train this one \
                 with {}",
                kind.head_outputs(),
                self.default_objective,
                if outputs == 1 { "" } else { "s" },
                fits.join(", ")
            )));
        }
        let config = TrainConfig {
            epochs: options.epochs,
            batch_size: options.batch_size,
            optimizer: AdamWConfig {
                lr: options.learning_rate,
                weight_decay: options.weight_decay,
                ..AdamWConfig::default()
            },
            patience: options.patience,
            seed: options.seed,
        };
        config.validate()?;
        check::in_range("validationFraction", options.validation_fraction, 0.0, 0.5)?;
        let objective = ObjectiveConfig {
            kind,
            propensity_clip: options.propensity_clip,
            ..ObjectiveConfig::default()
        };
        objective.validate()?;
        if self.log.is_empty() {
            return Err(Error::Empty {
                what: "pending observations (call observe before train)".into(),
            });
        }
        if options.parts == Parts::Personal && self.weights.personal.is_none() {
            return Err(Error::InvalidConfig(
                "parts = 'personal' needs a personal part (personalization is 'none')".into(),
            ));
        }
        // The pull is the personal part's weight decay, which AdamW bounds to [0, 1].
        check::in_range("personalPull", options.personal_pull, 0.0, 1.0)?;
        // The call's data: the newest replayed turns that the pending ones leave room for in
        // the window, then the pending observations (all of them, whatever the window).
        let replayed = replayed_for(&self.replay, &self.log, self.replay_turns);
        let data: Vec<LoggedObservation> = replayed.iter().chain(&self.log).cloned().collect();
        let all = to_examples(&data, self.config().dim)?;
        let (train, val) = split_by_turn(
            &data,
            replayed.len(),
            &all,
            options.validation_fraction,
            options.seed,
        );
        if kind.is_pairwise() && train.pairs.is_empty() {
            return Err(Error::InvalidData(
                "pairwise needs answers shown together (same turn) with one of them liked".into(),
            ));
        }
        Ok(TrainJob {
            device: self.device.clone(),
            head: self.weights.head.clone(),
            exposure: self.weights.exposure_head.clone(),
            personal: self.weights.personal.clone(),
            parts: options.parts,
            personal_pull: options.personal_pull,
            objective,
            train,
            val,
            config,
            trained_seqs: self.log.iter().map(|e| e.seq).collect(),
            replayed: replayed.len(),
            replay: window(&data, self.replay_turns),
        })
    }

    /// The weights `apply(outcome)` would install, as safetensors bytes: a host persists
    /// these first and applies only once they are stored.
    pub fn trained_bytes(&self, outcome: &TrainOutcome) -> Result<Vec<u8>> {
        store::to_bytes(&Weights {
            head: outcome.head.clone(),
            exposure_head: outcome.exposure_head.clone(),
            objective: Some(outcome.kind),
            version: self.weights.version,
            personal: outcome.personal.clone(),
        })
    }

    /// Installs a finished job's weights and drops the observations it trained on.
    pub fn apply(&mut self, outcome: &TrainOutcome) {
        self.weights.head = outcome.head.clone();
        self.weights.exposure_head = outcome.exposure_head.clone();
        self.weights.objective = Some(outcome.kind);
        self.weights.personal = outcome.personal.clone();
        let trained: std::collections::HashSet<u64> =
            outcome.trained_seqs.iter().copied().collect();
        self.log.retain(|e| !trained.contains(&e.seq));
        self.replay = window(&outcome.replay, self.replay_turns);
        self.history = self.history_after(outcome);
    }

    /// What [`RewardModel::stats`] reports of past training, to store with the weights so
    /// that it survives a reload ([`RewardModel::restore_history`]).
    pub fn history(&self) -> TrainingHistory {
        self.history
    }

    /// The history once `outcome` is applied (a host stores it in the same transaction as
    /// the trained weights, before it applies them).
    pub fn history_after(&self, outcome: &TrainOutcome) -> TrainingHistory {
        let ess = outcome
            .report
            .epochs
            .last()
            .map_or(0.0, |e| e.effective_sample_size);
        let last = outcome.report.final_loss().map(|l| (l, ess));
        TrainingHistory {
            trained_examples: self
                .history
                .trained_examples
                .saturating_add(outcome.examples() as u64),
            last_loss: last.map(|l| l.0),
            effective_sample_size: last.map(|l| l.1),
        }
    }

    /// Puts back a stored history (non-finite figures, which no training writes, are
    /// dropped rather than reported).
    pub fn restore_history(&mut self, history: TrainingHistory) {
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        self.history = TrainingHistory {
            trained_examples: history.trained_examples,
            last_loss: finite(history.last_loss),
            effective_sample_size: finite(history.effective_sample_size),
        };
    }

    pub fn export_weights(&self) -> Result<Vec<u8>> {
        store::to_bytes(&self.weights)
    }

    /// Replaces the weights with `bytes` (safetensors); the head's shape must match. On any
    /// error the current weights stay.
    pub fn import_weights(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.importable(bytes)?;
        self.replace_weights(w)
    }

    /// What [`RewardModel::import_weights`] would install, checked (a host stores the bytes
    /// before it installs them): the head's shape must match, and the version must be one
    /// that [`RewardModel::stats`] can report to JS.
    /// A file without a personal part (a global model, an older export) keeps this user's;
    /// one with a part of another kind than this model's is not this model's.
    pub fn importable(&self, bytes: &[u8]) -> Result<Weights> {
        let mut w = store::from_bytes_expecting(bytes, self.config())?;
        check::version("imported weights'", w.version)?;
        let kind = |p: Option<&Personal>| p.map_or(Personalization::None, |p| p.kind);
        let (mine, theirs) = (
            kind(self.weights.personal.as_ref()),
            kind(w.personal.as_ref()),
        );
        match theirs {
            Personalization::None => w.personal = self.weights.personal.clone(),
            k if k == mine => {}
            k => {
                return Err(Error::IncompatibleWeights(format!(
                    "the weights hold a '{k}' personal part; this model's personalization is \
                     '{mine}'"
                )))
            }
        }
        Ok(w)
    }

    /// Installs weights of the same head shape (a pulled, rebased global, or imported ones),
    /// keeping the log. Weights without a personal part (a global file) keep the current one.
    pub fn replace_weights(&mut self, mut weights: Weights) -> Result<()> {
        check::version("the new weights'", weights.version)?;
        if weights.head.config != *self.config() {
            return Err(Error::IncompatibleWeights(format!(
                "expected a head {:?}, got {:?}",
                self.config(),
                weights.head.config
            )));
        }
        match &weights.personal {
            Some(p) => p.validate(&weights.head.config)?,
            None => weights.personal = self.weights.personal.clone(),
        }
        self.weights = weights;
        Ok(())
    }

    /// Scores of `x`: `blend·shared + personal` with a personal part, the shared head's
    /// otherwise. `shared_only` asks for the shared (crowd) score alone.
    pub async fn score(&self, x: ArrayView2<'_, f32>, shared_only: bool) -> Result<Vec<f32>> {
        self.score_placed(x, shared_only).await.map(|(s, _)| s)
    }

    /// Like [`RewardModel::score`], and says which device served the call and why.
    pub async fn score_placed(
        &self,
        x: ArrayView2<'_, f32>,
        shared_only: bool,
    ) -> Result<(Vec<f32>, Served)> {
        score_on(
            &self.device,
            self.placement,
            &self.weights.head,
            self.weights.personal.as_ref(),
            x,
            shared_only,
        )
        .await
    }

    /// Forgets the user: [`RewardModel::forgotten`] weights on the current shared head, no
    /// pending observations, no replay window, no training history.
    pub fn forget(&mut self) -> Result<()> {
        let weights = self.forgotten(self.weights.head.clone())?;
        self.install_forgotten(weights)
    }

    /// The weights a forget installs on the shared head `shared` (a host with a sync state
    /// passes the one `SyncState::forget` returns, without the unsent updates): a zero
    /// personal part and no exposure head (both are fitted to the user's feedback).
    pub fn forgotten(&self, shared: Head) -> Result<Weights> {
        let personal = match &self.weights.personal {
            Some(p) => Some(Personal::new(p.kind, &shared.config)?),
            None => None,
        };
        Ok(Weights {
            head: shared,
            exposure_head: None,
            personal,
            ..self.weights.clone()
        })
    }

    /// Installs [`RewardModel::forgotten`] weights (a host persists them first) and drops the
    /// pending observations, the replay window and the training history.
    pub fn install_forgotten(&mut self, weights: Weights) -> Result<()> {
        self.replace_weights(weights)?;
        self.log.clear();
        self.replay.clear();
        self.history = TrainingHistory::default();
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        Stats {
            pending: self.log.len(),
            replay: self.replay.len(),
            effective_sample_size: self.history.effective_sample_size,
            last_loss: self.history.last_loss,
            trained_examples: self.history.trained_examples,
            version: self.weights.version,
            personal: self.weights.personal.as_ref().map(|p| PersonalStats {
                kind: p.kind,
                blend: p.blend,
                share: p.share,
                trained_examples: p.examples,
            }),
            last_score: self.last_served,
        }
    }
}

/// Scores `x` with the shared head on the device `placement` picks for the batch (the CPU
/// path if the GPU is lost during the call), then adds the personal part (if any and not
/// `shared_only`). The one scoring path of every host.
pub async fn score_on(
    device: &Device,
    placement: Placement,
    head: &Head,
    personal: Option<&Personal>,
    x: ArrayView2<'_, f32>,
    shared_only: bool,
) -> Result<(Vec<f32>, Served)> {
    let (on, mut served) = placement.for_scoring(device, x.nrows());
    let shared = on.score_async(head, x).await?;
    if on.is_lost() {
        served.device = ServedOn::Cpu;
        served.reason = ServedBecause::DeviceLost;
    }
    Ok((combine(personal, head, shared, x, shared_only)?, served))
}

/// The final scores from the shared head's scores of `x` and the personal part (if any).
pub fn combine(
    personal: Option<&Personal>,
    shared_head: &Head,
    shared: Vec<f32>,
    x: ArrayView2<'_, f32>,
    shared_only: bool,
) -> Result<Vec<f32>> {
    match personal {
        Some(p) if !shared_only => Ok(p.combine(&shared, &p.residual(shared_head, x)?)),
        _ => Ok(shared),
    }
}

/// Checks `flat` as `n × dim` embeddings (n ≥ 1, all finite).
pub fn embeddings(dim: usize, flat: &[f32]) -> Result<ArrayView2<'_, f32>> {
    check::non_empty("embeddings", flat.len())?;
    if flat.len() % dim != 0 {
        return Err(Error::DimMismatch {
            what: format!("embeddings length (a multiple of dim = {dim})"),
            expected: flat.len().div_ceil(dim) * dim,
            got: flat.len(),
        });
    }
    check::finite("embeddings", flat)?;
    ArrayView2::from_shape((flat.len() / dim, dim), flat)
        .map_err(|e| Error::InvalidData(format!("embeddings: {e}")))
}

/// Indices of `scores` from best to worst (ties keep their order).
pub fn rank(scores: &[f32]) -> Vec<u32> {
    crate::math::sorted_order(scores.len(), &mut |a, b| scores[b].total_cmp(&scores[a]))
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

/// The turn an entry belongs to (an entry without one is a turn of its own).
fn turn_key(e: &LoggedObservation) -> &str {
    e.turn.as_deref().unwrap_or(e.id.as_str())
}

/// The newest `turns` turns of `entries` (by their last entry), at most
/// [`REPLAY_OBSERVATIONS_PER_TURN`] × `turns` entries (the oldest go first), in order.
fn window(entries: &[LoggedObservation], turns: usize) -> Vec<LoggedObservation> {
    let mut kept = std::collections::HashSet::new();
    for e in entries.iter().rev() {
        if kept.len() == turns {
            break;
        }
        kept.insert(turn_key(e));
    }
    let mut out: Vec<LoggedObservation> = entries
        .iter()
        .filter(|e| kept.contains(turn_key(e)))
        .cloned()
        .collect();
    let cap = turns.saturating_mul(REPLAY_OBSERVATIONS_PER_TURN);
    if out.len() > cap {
        out.drain(..out.len() - cap);
    }
    out
}

/// The entries of `replay` a call with `pending` trains on again: the newest turns of the
/// window that the pending turns leave room for among `turns` (none if they fill it).
fn replayed_for(
    replay: &[LoggedObservation],
    pending: &[LoggedObservation],
    turns: usize,
) -> Vec<LoggedObservation> {
    let pending_turns: std::collections::HashSet<&str> = pending.iter().map(turn_key).collect();
    let room = turns.saturating_sub(pending_turns.len());
    if room == 0 {
        return Vec::new();
    }
    let older: Vec<LoggedObservation> = replay
        .iter()
        .filter(|e| !pending_turns.contains(turn_key(e)))
        .cloned()
        .collect();
    window(&older, room)
}

/// Holds out whole turns (so that pairs stay within one side) for early stopping, drawn from
/// the pending turns only: the first `replayed` entries of `log` (the replay window, trained
/// on before) always train, so that a held-out loss is measured on turns no part has seen.
fn split_by_turn(
    log: &[LoggedObservation],
    replayed: usize,
    all: &Examples,
    fraction: f64,
    seed: u64,
) -> (Examples, Option<Examples>) {
    if fraction <= 0.0 || log.len() - replayed < 10 {
        return (all.clone(), None);
    }
    let key = |i: usize| turn_key(&log[i]);
    let mut seen = std::collections::HashSet::new();
    let mut turns: Vec<&str> = (replayed..log.len())
        .map(key)
        .filter(|k| seen.insert(*k))
        .collect();
    Rng::new(seed ^ 0x7A1).shuffle(&mut turns);
    let held = ((turns.len() as f64 * fraction).round() as usize).min(turns.len() - 1);
    if held == 0 {
        return (all.clone(), None);
    }
    let held_out: std::collections::HashSet<&str> = turns[..held].iter().copied().collect();
    let (val_idx, train_idx): (Vec<usize>, Vec<usize>) =
        (0..log.len()).partition(|&i| held_out.contains(key(i)));
    (all.select(&train_idx), Some(all.select(&val_idx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::events::Shown;

    fn entry(seq: u64, turn: usize, dim: usize) -> LoggedObservation {
        LoggedObservation {
            seq,
            id: format!("{seq}"),
            turn: Some(format!("t{turn}")),
            embedding: vec![seq as f32; dim],
            shown: Shown {
                position: (seq % 2) as u32,
                candidates: 2,
            },
            events: Vec::new(),
            dwell_ms: 0.0,
            length: 0.0,
            propensity: None,
        }
    }

    /// Held-out turns come from the pending turns only: a replayed turn (trained on before)
    /// always trains, so held-out losses are measured on turns no part has seen.
    #[test]
    fn held_out_turns_are_pending_ones() {
        let log: Vec<LoggedObservation> = (0..40).map(|s| entry(s, s as usize / 2, 3)).collect();
        let all = to_examples(&log, 3).unwrap();
        for seed in 0..20 {
            let (train, val) = split_by_turn(&log, 20, &all, 0.5, seed);
            let val = val.expect("10 pending turns");
            // Rows are tagged by their embedding (= seq): the first 20 are replayed.
            assert!(val.emb.column(0).iter().all(|&v| v >= 20.0), "seed {seed}");
            assert_eq!(train.len() + val.len(), 40);
            assert_eq!(val.len(), 10, "half of the 10 pending turns");
        }
        // Fewer than 10 pending observations: no hold-out, whatever the replay.
        assert!(split_by_turn(&log, 31, &all, 0.5, 0).1.is_none());
    }

    #[test]
    fn a_window_keeps_the_newest_turns_and_is_bounded() {
        let log: Vec<LoggedObservation> = (0..12).map(|s| entry(s, s as usize / 3, 3)).collect();
        let w = window(&log, 2);
        assert_eq!(
            w.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (6..12).collect::<Vec<_>>()
        );
        assert!(window(&log, 0).is_empty());
        // A turn of more entries than the per-turn allowance: the oldest entries go first.
        let big: Vec<LoggedObservation> = (0..40).map(|s| entry(s, 0, 3)).collect();
        let w = window(&big, 1);
        assert_eq!(w.len(), REPLAY_OBSERVATIONS_PER_TURN);
        assert_eq!(w[0].seq, 40 - REPLAY_OBSERVATIONS_PER_TURN as u64);
        // Replayed turns for a call: none of the pending turns, the newest that fit.
        let pending = vec![entry(12, 3, 3)];
        let r = replayed_for(&log, &pending, 3);
        assert_eq!(
            r.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 7, 8]
        );
    }
}
