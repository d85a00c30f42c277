//! Objectives: how feedback becomes a loss on the head's outputs (DESIGN §3).
//!
//! An objective is prepared once per training call from the [`Examples`] (per-row weights and
//! targets, pair weights), then evaluated batch by batch on the head's outputs. Each family
//! lives in its own file; this module names them and dispatches.

pub mod bce;
pub mod beta;
pub mod choice;
pub mod nonneg;
pub mod pairwise;
pub mod strata;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};
use crate::feedback::flip::FlipRates;
use crate::feedback::Examples;

pub use beta::BetaParams;
pub use pairwise::OcrmParams;

/// Every objective the trainer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    /// Every silent answer counted as bad: `t = o`.
    Naive,
    /// Inverse propensity scoring: `t = o/π̂`.
    Ips,
    /// Self-normalised IPS.
    Snips,
    /// Natarajan's noise-corrected loss on explicit labels.
    Noise,
    /// Noise correction plus inverse propensity weighting (CausalRM's OME-IPS).
    NoiseIps,
    /// Doubly robust: imputed targets corrected where feedback was observed.
    Dr,
    /// ImplicitRM's four latent strata with an exposure head.
    Implicit,
    /// Bradley–Terry on choices among candidates, OCRM-weighted.
    Pairwise,
    /// ICRM's Beta mean/confidence head.
    Beta,
}

impl ObjectiveKind {
    pub const ALL: [ObjectiveKind; 9] = [
        ObjectiveKind::Naive,
        ObjectiveKind::Ips,
        ObjectiveKind::Snips,
        ObjectiveKind::Noise,
        ObjectiveKind::NoiseIps,
        ObjectiveKind::Dr,
        ObjectiveKind::Implicit,
        ObjectiveKind::Pairwise,
        ObjectiveKind::Beta,
    ];
    pub const NAMES: [&'static str; 9] = [
        "naive",
        "ips",
        "snips",
        "noise",
        "noise-ips",
        "dr",
        "implicit",
        "pairwise",
        "beta",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|&k| k == self).expect("listed")]
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .position(|&n| n == name)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| Error::unknown("objective", name, &Self::NAMES))
    }

    /// Everything the trainer and the backends need to know about the objective, from one
    /// exhaustive table: a new kind does not compile until it names its family (and so its
    /// CPU loss and GPU kernel) and its needs.
    pub const fn descriptor(self) -> Descriptor {
        const NONE: Needs = Needs {
            flip_rates: false,
            imputation: false,
            reaction_mask: false,
        };
        let logistic = Family::Logistic {
            self_normalised: false,
        };
        let (family, needs) = match self {
            ObjectiveKind::Naive | ObjectiveKind::Ips => (logistic, NONE),
            ObjectiveKind::Snips => (
                Family::Logistic {
                    self_normalised: true,
                },
                Needs {
                    reaction_mask: true,
                    ..NONE
                },
            ),
            ObjectiveKind::Noise | ObjectiveKind::NoiseIps => (
                logistic,
                Needs {
                    flip_rates: true,
                    reaction_mask: true,
                    ..NONE
                },
            ),
            ObjectiveKind::Dr => (
                logistic,
                Needs {
                    flip_rates: true,
                    imputation: true,
                    reaction_mask: true,
                },
            ),
            ObjectiveKind::Implicit => (Family::Strata, NONE),
            ObjectiveKind::Pairwise => (Family::Pairwise, NONE),
            ObjectiveKind::Beta => (Family::Beta, NONE),
        };
        Descriptor {
            family,
            head_outputs: family.head_outputs(),
            exposure_head: family.exposure_head(),
            unit: family.unit(),
            needs,
        }
    }

    /// Outputs the reward head needs (the Beta head has a mean and a confidence).
    pub fn head_outputs(self) -> usize {
        self.descriptor().head_outputs
    }

    /// Whether training also fits an exposure head on the exposure features.
    pub fn needs_exposure_head(self) -> bool {
        self.descriptor().exposure_head
    }

    /// Whether the objective uses flip rates of explicit labels.
    pub fn needs_flip_rates(self) -> bool {
        self.descriptor().needs.flip_rates
    }

    /// Whether the objective needs imputed targets from an auxiliary fit (`dr`).
    pub fn needs_imputation(self) -> bool {
        self.descriptor().needs.imputation
    }

    /// Whether the objective reads the reaction mask `m` (and, but for SNIPS, its sign `ỹ`):
    /// with positive-only data (`m` unknown) these cannot be trained.
    pub fn needs_reaction_mask(self) -> bool {
        self.descriptor().needs.reaction_mask
    }

    /// Whether minibatches are drawn over pairs rather than rows.
    pub fn is_pairwise(self) -> bool {
        match self.descriptor().unit {
            BatchUnit::Pairs => true,
            BatchUnit::Rows => false,
        }
    }
}

/// How an objective's loss is computed: each family has one CPU loss (its file in this
/// module, dispatched by [`Prepared::batch_loss`]) and one GPU kernel with its uniforms
/// (`src/backend/gpu/engine.rs`), both chosen by exhaustive matches on this enum, so a
/// family without either does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// The weighted-logistic loss of `bce.rs` on per-row `(w, t)`; SNIPS self-normalises the
    /// targets by the batch mean of `m/π̂`.
    Logistic { self_normalised: bool },
    /// ImplicitRM's four latent strata (`strata.rs`), with an exposure head.
    Strata,
    /// Bradley–Terry on pairs (`pairwise.rs`).
    Pairwise,
    /// ICRM's Beta mean/confidence head (`beta.rs`).
    Beta,
}

impl Family {
    /// Outputs of the reward head.
    pub const fn head_outputs(self) -> usize {
        match self {
            Family::Beta => 2,
            Family::Logistic { .. } | Family::Strata | Family::Pairwise => 1,
        }
    }

    /// Whether the loss reads the logits of an exposure head fitted alongside.
    pub const fn exposure_head(self) -> bool {
        match self {
            Family::Strata => true,
            Family::Logistic { .. } | Family::Pairwise | Family::Beta => false,
        }
    }

    /// What a minibatch draws.
    pub const fn unit(self) -> BatchUnit {
        match self {
            Family::Pairwise => BatchUnit::Pairs,
            Family::Logistic { .. } | Family::Strata | Family::Beta => BatchUnit::Rows,
        }
    }
}

/// What a minibatch is drawn over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchUnit {
    Rows,
    Pairs,
}

/// Inputs an objective needs beyond the examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Needs {
    /// Flip rates of explicit labels (configured or estimated from anchors).
    pub flip_rates: bool,
    /// Imputed targets from an auxiliary fit.
    pub imputation: bool,
    /// The reaction mask `m` (so positive-only data cannot train it).
    pub reaction_mask: bool,
}

/// One objective kind's descriptor (see [`ObjectiveKind::descriptor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub family: Family,
    pub head_outputs: usize,
    /// Whether training also fits an exposure head on the exposure features.
    pub exposure_head: bool,
    pub unit: BatchUnit,
    pub needs: Needs,
}

impl std::fmt::Display for ObjectiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An objective and its settings, with the defaults of DESIGN §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    pub kind: ObjectiveKind,
    /// Propensities are clipped below at this value before inverse weighting.
    pub propensity_clip: f64,
    /// Flip rates of explicit labels; `None` = estimate them from anchor quantiles.
    pub flip: Option<FlipRates>,
    /// Quantiles used as anchors when estimating flip rates.
    pub anchor_quantiles: (f64, f64),
    /// Clamp each class-wise partial risk at 0 (non-negative correction).
    pub nonneg: bool,
    /// Logits are clipped to ±this in the loss.
    pub logit_clip: f64,
    pub beta: BetaParams,
    pub ocrm: OcrmParams,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            kind: ObjectiveKind::Ips,
            propensity_clip: 0.1,
            flip: None,
            anchor_quantiles: (0.03, 0.97),
            nonneg: true,
            logit_clip: 15.0,
            beta: BetaParams::default(),
            ocrm: OcrmParams::default(),
        }
    }
}

impl ObjectiveConfig {
    pub fn new(kind: ObjectiveKind) -> Self {
        ObjectiveConfig {
            kind,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        check::in_range("propensity_clip", self.propensity_clip, 1e-4, 1.0)?;
        check::in_range("logit_clip", self.logit_clip, 1.0, 100.0)?;
        check::in_range("anchor low quantile", self.anchor_quantiles.0, 0.0, 0.49)?;
        check::in_range("anchor high quantile", self.anchor_quantiles.1, 0.51, 1.0)?;
        check::in_range("ocrm.alpha", self.ocrm.alpha, 1e-6, 1.0 - 1e-6)?;
        check::in_range("ocrm.beta", self.ocrm.beta, 0.0, 10.0)?;
        if let Some(f) = self.flip {
            FlipRates::new(f.rho10, f.rho01)?;
        }
        self.beta.validate()
    }
}

/// Per-example quantities an objective needs, computed once per training call.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub config: ObjectiveConfig,
    /// Per-row weight and effective target (weighted-logistic family and `beta`).
    pub w: Vec<f32>,
    pub t: Vec<f32>,
    /// Per-row inverse-propensity weight of the reaction mask, `m/π̂` (SNIPS normaliser).
    pub mask_weight: Vec<f32>,
    /// Observed positives (for `implicit`).
    pub observed: Vec<f32>,
    /// `(winner, loser, weight)` for `pairwise`.
    pub pairs: Vec<(usize, usize, f32)>,
    /// The importance weights whose effective sample size the trainer reports.
    pub importance: Vec<f32>,
}

/// The loss of one batch and its gradients.
#[derive(Debug, Clone)]
pub struct LossGrad {
    pub loss: f64,
    /// `dL/d(head outputs)`, `[rows, outputs]`.
    pub d_out: Array2<f32>,
    /// `dL/d(exposure logits)`, `[rows, 1]`, for `implicit`.
    pub d_aux: Option<Array2<f32>>,
}

impl Prepared {
    /// Builds the per-example quantities. `flip` is the resolved flip rates (configured or
    /// estimated); `imputed` the imputation head's `ŷ` for `dr`.
    pub fn new(
        config: &ObjectiveConfig,
        ex: &Examples,
        flip: FlipRates,
        imputed: Option<&[f32]>,
    ) -> Result<Self> {
        config.validate()?;
        ex.validate()?;
        check::non_empty("training examples", ex.len())?;
        let n = ex.len();
        let kind = config.kind;
        let clip = config.propensity_clip;
        let inv_pi = |i: usize| 1.0 / bce::clipped_propensity(ex.propensity[i] as f64, clip);
        let corrected = |i: usize| bce::noise_corrected_target(ex.explicit[i] as f64, flip);
        let mut w = vec![1.0f32; n];
        let mut t = vec![0.0f32; n];
        let mask_weight: Vec<f32> = (0..n)
            .map(|i| (ex.feedback[i] as f64 * inv_pi(i)) as f32)
            .collect();
        let mut importance = vec![1.0f32; n];
        match kind {
            ObjectiveKind::Naive | ObjectiveKind::Implicit => t.copy_from_slice(&ex.observed),
            ObjectiveKind::Ips | ObjectiveKind::Snips | ObjectiveKind::Beta => {
                for (i, ti) in t.iter_mut().enumerate() {
                    *ti = (ex.observed[i] as f64 * inv_pi(i)) as f32;
                }
                importance.copy_from_slice(&mask_weight);
            }
            ObjectiveKind::Noise => {
                for i in 0..n {
                    w[i] = ex.feedback[i];
                    t[i] = corrected(i) as f32;
                }
                importance.copy_from_slice(&ex.feedback);
            }
            ObjectiveKind::NoiseIps => {
                for i in 0..n {
                    w[i] = mask_weight[i];
                    t[i] = corrected(i) as f32;
                }
                importance.copy_from_slice(&mask_weight);
            }
            ObjectiveKind::Dr => {
                let imputed = imputed
                    .ok_or_else(|| Error::InvalidConfig("dr needs imputed targets".into()))?;
                check::len("imputed targets", n, imputed.len())?;
                check::finite("imputed targets", imputed)?;
                for i in 0..n {
                    let y_hat = imputed[i] as f64;
                    t[i] =
                        (y_hat + ex.feedback[i] as f64 * (corrected(i) - y_hat) * inv_pi(i)) as f32;
                }
                importance.copy_from_slice(&mask_weight);
            }
            ObjectiveKind::Pairwise => {}
        }
        let pairs = if kind.is_pairwise() {
            if ex.pairs.is_empty() {
                return Err(Error::Empty {
                    what: "pairs for the pairwise objective".into(),
                });
            }
            ex.pairs
                .iter()
                .map(|p| {
                    let weight = match (p.logp_new, p.logp_old) {
                        (Some(n), Some(o)) => pairwise::ocrm_weight(
                            [n[0] as f64, n[1] as f64],
                            [o[0] as f64, o[1] as f64],
                            config.ocrm,
                        ),
                        _ => 1.0,
                    };
                    (p.winner, p.loser, weight as f32)
                })
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        if kind.is_pairwise() {
            importance = pairs.iter().map(|p| p.2).collect();
        }
        if kind == ObjectiveKind::Snips && mask_weight.iter().all(|&m| m == 0.0) {
            return Err(Error::InvalidData(
                "snips needs at least one exposure with feedback".into(),
            ));
        }
        Ok(Prepared {
            config: config.clone(),
            w,
            t,
            mask_weight,
            observed: ex.observed.clone(),
            pairs,
            importance,
        })
    }

    pub fn kind(&self) -> ObjectiveKind {
        self.config.kind
    }

    /// Kish's effective sample size `(Σw)²/Σw²` of the importance weights.
    pub fn effective_sample_size(&self) -> f64 {
        effective_sample_size(&self.importance)
    }

    /// Loss and gradients for a batch. `rows` are example indices whose head outputs are
    /// `out` (row-aligned); `pairs` index into `rows` (pairwise only); `aux` are the
    /// exposure head's logits (implicit only).
    pub fn batch_loss(
        &self,
        rows: &[usize],
        pairs: &[(usize, usize, f32)],
        out: ArrayView2<f32>,
        aux: Option<ArrayView2<f32>>,
    ) -> Result<LossGrad> {
        let b = rows.len();
        check::non_empty("batch", b)?;
        check::len("batch outputs", b, out.nrows())?;
        check::len("head outputs", self.kind().head_outputs(), out.ncols())?;
        check::finite_array("head outputs", out.view())?;
        let cfg = &self.config;
        if let Some(&r) = rows.iter().find(|&&r| r >= self.t.len()) {
            return Err(Error::InvalidData(format!(
                "batch row {r} is outside the {} prepared examples",
                self.t.len()
            )));
        }
        let gather = |v: &Vec<f32>| rows.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let z: Vec<f32> = out.column(0).to_vec();
        let column = |g: Vec<f32>| Array2::from_shape_vec((b, 1), g).expect("one value per row");
        match self.kind().descriptor().family {
            Family::Strata => {
                let aux = aux
                    .ok_or_else(|| Error::InvalidConfig("implicit needs exposure logits".into()))?;
                check::len("exposure logits", b, aux.nrows())?;
                let a: Vec<f32> = aux.column(0).to_vec();
                let (loss, dz, da) = strata::loss(&z, &a, &gather(&self.observed), cfg.logit_clip);
                Ok(LossGrad {
                    loss,
                    d_out: column(dz),
                    d_aux: Some(column(da)),
                })
            }
            Family::Pairwise => {
                check::non_empty("pairs in batch", pairs.len())?;
                if pairs.iter().any(|&(w, l, _)| w >= b || l >= b) {
                    return Err(Error::InvalidData(
                        "batch pair refers to a row outside the batch".into(),
                    ));
                }
                let (loss, dz) = pairwise::loss(&z, pairs);
                Ok(LossGrad {
                    loss,
                    d_out: column(dz),
                    d_aux: None,
                })
            }
            Family::Beta => {
                let u: Vec<f32> = out.column(1).to_vec();
                let (loss, ds, du) = beta::loss(
                    &z,
                    &u,
                    &gather(&self.w),
                    &gather(&self.t),
                    &cfg.beta,
                    cfg.nonneg,
                    cfg.logit_clip,
                );
                let d_out =
                    Array2::from_shape_fn((b, 2), |(i, j)| if j == 0 { ds[i] } else { du[i] });
                Ok(LossGrad {
                    loss,
                    d_out,
                    d_aux: None,
                })
            }
            Family::Logistic { self_normalised } => {
                let mut t = gather(&self.t);
                if self_normalised {
                    // Self-normalisation: divide by the batch mean of the reaction-mask weights
                    // m/π̂, whose expectation is 1. (The mean of o/π̂ would estimate the
                    // positive rate instead, and force every batch to look all-positive.)
                    let norm = rows
                        .iter()
                        .map(|&i| self.mask_weight[i] as f64)
                        .sum::<f64>()
                        / b as f64;
                    if norm > 0.0 {
                        t.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
                    }
                }
                let (loss, dz) = bce::loss(&z, &gather(&self.w), &t, cfg.nonneg, cfg.logit_clip);
                Ok(LossGrad {
                    loss,
                    d_out: column(dz),
                    d_aux: None,
                })
            }
        }
    }
}

/// Kish's effective sample size of a set of weights (0 for an empty or all-zero set).
pub fn effective_sample_size(weights: &[f32]) -> f64 {
    let s: f64 = weights.iter().map(|&w| w as f64).sum();
    let s2: f64 = weights.iter().map(|&w| (w as f64).powi(2)).sum();
    if s2 > 0.0 {
        s * s / s2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptor table against the objectives of DESIGN §3, written out literally:
    /// (kind, head outputs, exposure head, pairs, flip rates, imputation, reaction mask).
    #[test]
    fn descriptors_match_the_design() {
        let table = [
            (ObjectiveKind::Naive, 1, false, false, false, false, false),
            (ObjectiveKind::Ips, 1, false, false, false, false, false),
            (ObjectiveKind::Snips, 1, false, false, false, false, true),
            (ObjectiveKind::Noise, 1, false, false, true, false, true),
            (ObjectiveKind::NoiseIps, 1, false, false, true, false, true),
            (ObjectiveKind::Dr, 1, false, false, true, true, true),
            (ObjectiveKind::Implicit, 1, true, false, false, false, false),
            (ObjectiveKind::Pairwise, 1, false, true, false, false, false),
            (ObjectiveKind::Beta, 2, false, false, false, false, false),
        ];
        assert_eq!(table.len(), ObjectiveKind::ALL.len());
        for (kind, outputs, exposure, pairs, flip, imputation, mask) in table {
            assert_eq!(kind.head_outputs(), outputs, "{kind}");
            assert_eq!(kind.needs_exposure_head(), exposure, "{kind}");
            assert_eq!(kind.is_pairwise(), pairs, "{kind}");
            assert_eq!(kind.needs_flip_rates(), flip, "{kind}");
            assert_eq!(kind.needs_imputation(), imputation, "{kind}");
            assert_eq!(kind.needs_reaction_mask(), mask, "{kind}");
        }
        // Only SNIPS self-normalises, and the logistic family is the six weighted kinds.
        let logistic: Vec<_> = ObjectiveKind::ALL
            .into_iter()
            .filter(|k| matches!(k.descriptor().family, Family::Logistic { .. }))
            .map(ObjectiveKind::name)
            .collect();
        assert_eq!(
            logistic,
            ["naive", "ips", "snips", "noise", "noise-ips", "dr"]
        );
        assert_eq!(
            ObjectiveKind::Snips.descriptor().family,
            Family::Logistic {
                self_normalised: true
            }
        );
    }
}
