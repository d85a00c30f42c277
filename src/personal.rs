//! The personal part of a two-part model (DESIGN §10). A browser scores with
//!
//! ```text
//! s_u(x) = a_u · shared(x) + personal_u(x)
//! ```
//!
//! where `shared` is the head that sync exchanges with the server and `personal_u` is a
//! linear head on the embedding that is trained, stored and exported on the device only. It
//! starts at zero (a new user gets the crowd's model) and is pulled back toward zero by the
//! optimizer's decoupled weight decay (Ditto's `λ‖θ_u‖²` proximal term, with the shared model
//! as the point it is pulled to). The blend `a_u ∈ {0, ½, 1}` is chosen per user on that
//! user's own held-out turns: each training call trains one personal head per candidate blend
//! on the call's training turns and scores it on the held-out turns; the held-out losses
//! accumulate across calls and the blend with the lowest total wins. A user who agrees with
//! the crowd keeps `a = 1` and a small residual; one who does not moves to `a = 0`, where the
//! personal head is that user's own model.
//!
//! The two parts train in turn, each with the other held fixed as a per-row logit offset
//! (`Examples::offset`, added on the CPU and by `shaders/add_offset.wgsl` on the GPU): the
//! personal part on `a·shared(x)`, then the shared part on `personal(x)`, so that what the
//! shared part learns (and what a sync pushes) is what the personal part does not explain.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::backend::{cpu, Device};
use crate::error::{Error, Result};
use crate::feedback::Examples;
use crate::head::{Head, HeadConfig};
use crate::objective::ObjectiveConfig;
use crate::trainer::{self, EpochReport, TrainConfig, TrainRequest, TrainedPart};

/// Blends of the shared score a user may get, from "ignore the crowd" to "the crowd plus a
/// residual". Held-out losses are kept per candidate, in this order.
pub const BLEND_CANDIDATES: [f32; 3] = [0.0, 0.5, 1.0];

/// Which personal part a model keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Personalization {
    /// No personal part: every score is the shared model's (a sync replaces the user's taste
    /// with the crowd's).
    None,
    /// A personal residual with its blend chosen per user on held-out turns (the default on
    /// a linear head, which has no hidden layer for `basis` to read).
    Residual,
    /// Ditto with a fixed blend: always `shared + personal` (a = 1). Kept for comparison.
    Ditto,
    /// A mix of two whole models: the user's own, trained on its feedback alone, and the
    /// crowd's, `a·shared + own`, with `a` chosen per user on held-out turns.
    Mix,
    /// A shared taste basis and per-user coefficients (FedRep, LoRe, PAL): the personal part
    /// is a linear head on the shared head's last hidden layer `h(x)`, `s = shared(x) +
    /// c_u·h(x)`. The shared part trains with `c_u` held fixed as part of its output layer, so
    /// that everyone's updates teach the hidden layer the directions in which users differ;
    /// each user fits only `c_u` (one weight per hidden unit), so it adapts from a few turns.
    /// Needs a shared head with a hidden layer. The default on such a head
    /// ([`Personalization::default_for`]): it is the design that beat both the crowd's model
    /// and the user's own on the multi-user protocol (README, "Personalization").
    Basis,
}

impl Personalization {
    pub const ALL: [Personalization; 5] = [
        Personalization::None,
        Personalization::Residual,
        Personalization::Ditto,
        Personalization::Mix,
        Personalization::Basis,
    ];

    /// The personal part a new model gets unless told otherwise: `basis` where the shared head
    /// has a hidden layer for it to read, `residual` on a linear head.
    pub fn default_for(hidden: &[usize]) -> Self {
        if hidden.is_empty() {
            Personalization::Residual
        } else {
            Personalization::Basis
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Personalization::None => "none",
            Personalization::Residual => "residual",
            Personalization::Ditto => "ditto",
            Personalization::Mix => "mix",
            Personalization::Basis => "basis",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown personalization '{name}' (expected none, residual, ditto, mix or basis)"
                ))
            })
    }

    /// Whether the blend adapts to the user (otherwise it stays at 1).
    pub fn adapts_blend(self) -> bool {
        matches!(self, Personalization::Residual | Personalization::Mix)
    }

    /// Whether each part trains on the other's scores as a fixed offset (a residual), or each
    /// is a whole model of its own (`mix`).
    pub fn trains_on_offsets(self) -> bool {
        matches!(
            self,
            Personalization::Residual | Personalization::Ditto | Personalization::Basis
        )
    }

    /// The width of the personal head's input for a shared head `shared`: the embedding, or
    /// the last hidden layer for `basis`.
    pub fn input_dim(self, shared: &HeadConfig) -> Result<usize> {
        match self {
            Personalization::Basis => shared.hidden.last().copied().ok_or_else(|| {
                Error::InvalidConfig(
                    "personalization 'basis' (the default of a head with a hidden layer) needs \
                     a shared head with a hidden layer; a linear head takes 'residual'"
                        .into(),
                )
            }),
            _ => Ok(shared.dim),
        }
    }
}

impl std::fmt::Display for Personalization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The default pull of the personal head toward zero (AdamW's decoupled weight decay on the
/// personal part: each step multiplies its weights by `1 − lr·pull`).
pub const DEFAULT_PULL: f64 = 1.0;

/// A user's personal part: never synced, stored and exported with the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Personal {
    pub kind: Personalization,
    /// Linear: the embedding (or, for `basis`, the shared head's last hidden layer) → the
    /// objective's outputs (the first is the score's residual).
    pub head: Head,
    /// `a_u`, the weight of the shared score.
    pub blend: f32,
    /// Held-out loss summed over calls (weighted by held-out rows), per [`BLEND_CANDIDATES`].
    pub blend_loss: Vec<f64>,
    /// Observations the personal part has trained on.
    pub examples: u64,
    /// The personal part's share of the score on the last training call's rows:
    /// `Σ|personal| / (Σ|a·shared| + Σ|personal|)`, in [0, 1].
    pub share: f64,
}

impl Personal {
    /// A zero personal part for the shared head `shared` (scores are the shared model's until
    /// it trains).
    pub fn new(kind: Personalization, shared: &HeadConfig) -> Result<Self> {
        if kind == Personalization::None {
            return Err(Error::InvalidConfig(
                "personalization 'none' has no personal part".into(),
            ));
        }
        let mut head = Head::init(&Self::head_config(kind, shared)?, 0)?;
        head = head.zeros_like();
        Ok(Personal {
            kind,
            head,
            blend: 1.0,
            blend_loss: vec![0.0; BLEND_CANDIDATES.len()],
            examples: 0,
            share: 0.0,
        })
    }

    /// The personal head's shape for `kind` beside the shared head `shared`.
    pub fn head_config(kind: Personalization, shared: &HeadConfig) -> Result<HeadConfig> {
        Ok(HeadConfig {
            outputs: shared.outputs,
            ..HeadConfig::new(kind.input_dim(shared)?, &[])
        })
    }

    /// Checks the stored or imported part against the shared head it goes with.
    pub fn validate(&self, shared: &HeadConfig) -> Result<()> {
        let c = &self.head.config;
        if Self::head_config(self.kind, shared).ok().as_ref() != Some(c) {
            return Err(Error::IncompatibleWeights(format!(
                "a '{}' personal part {c:?} does not fit the shared head {shared:?}",
                self.kind
            )));
        }
        if self.kind == Personalization::None {
            return Err(Error::CorruptWeights(
                "a personal part of kind 'none'".into(),
            ));
        }
        if !self.head.is_finite() {
            return Err(Error::NonFinite {
                what: "personal weights".into(),
                index: 0,
            });
        }
        if !BLEND_CANDIDATES.contains(&self.blend)
            || self.blend_loss.len() != BLEND_CANDIDATES.len()
            || self.blend_loss.iter().any(|l| !l.is_finite() || *l < 0.0)
            || !(0.0..=1.0).contains(&self.share)
        {
            return Err(Error::CorruptWeights(
                "personal metadata (blend, blend losses or share) out of range".into(),
            ));
        }
        Ok(())
    }

    /// What the personal head reads for the rows of `x`: the embeddings, or for `basis` the
    /// shared head's last hidden layer (on the CPU path).
    pub fn features(&self, shared: &Head, x: ArrayView2<f32>) -> Result<ndarray::Array2<f32>> {
        match self.kind {
            Personalization::Basis => cpu::last_hidden(shared, x),
            _ => Ok(x.to_owned()),
        }
    }

    /// The personal residual of every row of `x` (the CPU path: a linear map, cheaper than
    /// any GPU round trip).
    pub fn residual(&self, shared: &Head, x: ArrayView2<f32>) -> Result<Vec<f32>> {
        match self.kind {
            Personalization::Basis => cpu::score(&self.head, cpu::last_hidden(shared, x)?.view()),
            _ => cpu::score(&self.head, x),
        }
    }

    /// For `basis`: the shared head with this part folded into its output layer, the head the
    /// shared part trains as (`c_u` held fixed); [`Personal::unfold`] takes it back out.
    pub fn fold(&self, shared: &Head) -> Head {
        let mut h = shared.clone();
        let last = h.layers.len() - 1;
        h.layers[last].weight += &self.head.layers[0].weight;
        h.layers[last].bias += &self.head.layers[0].bias;
        h
    }

    pub fn unfold(&self, folded: &Head) -> Head {
        let mut h = folded.clone();
        let last = h.layers.len() - 1;
        h.layers[last].weight -= &self.head.layers[0].weight;
        h.layers[last].bias -= &self.head.layers[0].bias;
        h
    }

    /// `a·shared + personal`, row by row.
    pub fn combine(&self, shared: &[f32], residual: &[f32]) -> Vec<f32> {
        shared
            .iter()
            .zip(residual)
            .map(|(s, p)| self.blend * s + p)
            .collect()
    }
}

/// What one personal training step needs besides the part itself.
pub struct PersonalRun<'a> {
    pub objective: &'a ObjectiveConfig,
    pub train: &'a Examples,
    pub val: Option<&'a Examples>,
    /// The shared head the scores below come from (`basis` reads its hidden layer).
    pub shared: &'a Head,
    /// The shared model's scores of the training and validation rows.
    pub shared_train: &'a [f32],
    pub shared_val: Option<&'a [f32]>,
    /// Schedule of the call (its weight decay is replaced by `pull`).
    pub config: &'a TrainConfig,
    pub pull: f64,
}

/// How many training runs [`train`] makes for `personal`: one per candidate blend where the
/// blend adapts and held-out turns exist, else one (a host's progress bar counts them).
pub fn planned_runs(personal: &Personal, has_val: bool) -> usize {
    if personal.kind.trains_on_offsets() && personal.kind.adapts_blend() && has_val {
        BLEND_CANDIDATES.len()
    } else {
        1
    }
}

/// What [`train`] returns: the new part, and whether `progress` asked to stop (the part then
/// holds what the runs trained before the stop).
pub struct PersonalOutcome {
    pub personal: Personal,
    pub cancelled: bool,
}

/// Trains `personal` on `run` on `device` and returns the new part: one run per candidate
/// blend where the blend adapts and held-out turns exist, else one run at the current blend.
/// `progress` hears every epoch (marked [`TrainedPart::Personal`], `fraction` over all the
/// runs) and may stop the training; `between_epochs` lets the host yield after each epoch, as
/// in the shared run (a page stays responsive, and can be reloaded, while the personal part
/// trains).
pub async fn train<Y: std::future::Future<Output = ()>>(
    device: &Device,
    personal: &Personal,
    run: &PersonalRun<'_>,
    progress: trainer::Progress<'_>,
    between_epochs: &mut impl FnMut() -> Y,
) -> Result<PersonalOutcome> {
    if !(run.pull.is_finite() && run.pull >= 0.0) {
        return Err(Error::InvalidConfig(format!(
            "personal pull = {} must be a finite number ≥ 0",
            run.pull
        )));
    }
    let mut config = run.config.clone();
    config.optimizer.weight_decay = run.pull;
    let val = run.val.zip(run.shared_val);
    if !personal.kind.trains_on_offsets() {
        return train_mix(device, personal, run, &config, progress, between_epochs).await;
    }
    let candidates: Vec<usize> = if planned_runs(personal, val.is_some()) > 1 {
        (0..BLEND_CANDIDATES.len()).collect()
    } else {
        vec![blend_index(personal.blend)]
    };
    let mut cancelled = false;
    let mut best: Option<(f64, Personal)> = None;
    let mut blend_loss = personal.blend_loss.clone();
    let mut trained = Vec::new();
    let on_features = |ex: &Examples| -> Result<Examples> {
        let mut out = ex.clone();
        if personal.kind == Personalization::Basis {
            out.emb = personal.features(run.shared, ex.emb.view())?;
        }
        Ok(out)
    };
    let train_base = on_features(run.train)?;
    let val_base = val
        .map(|(v, s)| on_features(v).map(|v| (v, s)))
        .transpose()?;
    for (i, &c) in candidates.iter().enumerate() {
        let a = BLEND_CANDIDATES[c];
        let scaled = |s: &[f32]| s.iter().map(|v| a * v).collect::<Vec<f32>>();
        let train_set = train_base.clone().with_offset(scaled(run.shared_train));
        let val_set = val_base
            .as_ref()
            .map(|(v, s)| v.clone().with_offset(scaled(s)));
        let mut request = TrainRequest::new(&personal.head, run.objective, &train_set, &config);
        if let Some(v) = &val_set {
            request = request.with_val(v);
        }
        let out = trainer::train_async(
            device,
            &request,
            &mut |e| progress(&as_personal(e, i, candidates.len())),
            &mut *between_epochs,
        )
        .await?;
        let held_out = out
            .report
            .epochs
            .get(out.report.best_epoch.saturating_sub(1))
            .and_then(|e| e.val_loss);
        trained.push((c, out.head));
        if out.report.cancelled {
            // A run cut short says nothing fair about its blend: its loss is not kept.
            cancelled = true;
            break;
        }
        if let (Some(l), Some(v)) = (held_out, &val_set) {
            blend_loss[c] += l * v.len() as f64;
        }
    }
    for (c, head) in trained {
        let score = if candidates.len() > 1 {
            blend_loss[c]
        } else {
            0.0
        };
        // Ties go to the larger blend (the crowd), as candidates are visited in order.
        if best.as_ref().is_none_or(|(b, _)| score <= *b) {
            best = Some((
                score,
                Personal {
                    head,
                    blend: BLEND_CANDIDATES[c],
                    ..personal.clone()
                },
            ));
        }
    }
    let (_, mut next) = best.expect("at least one candidate");
    next.blend_loss = blend_loss;
    Ok(PersonalOutcome {
        personal: finish(next, run)?,
        cancelled,
    })
}

/// The trainer's report of run `run` of `runs`, as a personal epoch of the whole phase.
fn as_personal(e: &EpochReport, run: usize, runs: usize) -> EpochReport {
    let per_run = e.epochs.max(1) as f64;
    EpochReport {
        part: TrainedPart::Personal,
        fraction: (run as f64 * per_run + e.epoch as f64) / (runs.max(1) as f64 * per_run),
        ..e.clone()
    }
}

/// `mix`: one run of the user's own model on its feedback alone, then the blend whose
/// combined score `a·shared + own` has the lowest accumulated held-out loss.
async fn train_mix<Y: std::future::Future<Output = ()>>(
    device: &Device,
    personal: &Personal,
    run: &PersonalRun<'_>,
    config: &TrainConfig,
    progress: trainer::Progress<'_>,
    between_epochs: &mut impl FnMut() -> Y,
) -> Result<PersonalOutcome> {
    let mut request = TrainRequest::new(&personal.head, run.objective, run.train, config);
    if let Some(v) = run.val {
        request = request.with_val(v);
    }
    let out = trainer::train_async(
        device,
        &request,
        &mut |e| progress(&as_personal(e, 0, 1)),
        &mut *between_epochs,
    )
    .await?;
    let mut blend_loss = personal.blend_loss.clone();
    if let (Some(v), Some(sv)) = (run.val, run.shared_val) {
        let flip = out
            .report
            .flip
            .unwrap_or(crate::feedback::flip::FlipRates::NONE);
        // `dr`'s targets need its auxiliary fits: its blend stays where it is.
        if let Ok(prepared) = crate::objective::Prepared::new(run.objective, v, flip, None) {
            for (c, &a) in BLEND_CANDIDATES.iter().enumerate() {
                let ex = v.clone().with_offset(sv.iter().map(|s| a * s).collect());
                let loss = cpu::full_loss(&out.head, out.exposure_head.as_ref(), &prepared, &ex)?;
                if loss.is_finite() {
                    blend_loss[c] += loss * v.len() as f64;
                }
            }
        }
    }
    let blend = if run.val.is_some() {
        // Ties go to the larger blend (the crowd).
        let mut best = BLEND_CANDIDATES.len() - 1;
        for c in (0..BLEND_CANDIDATES.len()).rev() {
            if blend_loss[c] < blend_loss[best] {
                best = c;
            }
        }
        BLEND_CANDIDATES[best]
    } else {
        personal.blend
    };
    Ok(PersonalOutcome {
        personal: finish(
            Personal {
                head: out.head,
                blend,
                blend_loss,
                ..personal.clone()
            },
            run,
        )?,
        cancelled: out.report.cancelled,
    })
}

/// Counts the run's examples and measures the personal share of the score on its rows.
fn finish(mut next: Personal, run: &PersonalRun<'_>) -> Result<Personal> {
    next.examples += (run.train.len() + run.val.map_or(0, |v| v.len())) as u64;
    let residual = next.residual(run.shared, run.train.emb.view())?;
    let shared: f64 = run
        .shared_train
        .iter()
        .map(|s| (next.blend * s).abs() as f64)
        .sum();
    let own: f64 = residual.iter().map(|p| p.abs() as f64).sum();
    next.share = if shared + own > 0.0 {
        own / (shared + own)
    } else {
        0.0
    };
    Ok(next)
}

fn blend_index(blend: f32) -> usize {
    BLEND_CANDIDATES
        .iter()
        .position(|&b| b == blend)
        .unwrap_or(BLEND_CANDIDATES.len() - 1)
}
