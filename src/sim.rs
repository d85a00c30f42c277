//! The implicit-feedback simulator (DESIGN §4): from labelled data it makes the feedback an
//! app would see, keeping the truth for scoring.
//!
//! Per exposure: a display position among the candidates shown together, a synthetic
//! answer length (a random direction of embedding space, standardised) and a dwell time.
//! The user reacts with propensity `π` set by the protocol (`m ~ Bernoulli(π)`); a reaction
//! reveals the preference, possibly flipped (`ỹ`); a positive reaction is the implicit
//! positive `o = m·ỹ` (copy, thumbs-up). Where a group of candidates got a reaction, the
//! user also picks one of them by Bradley–Terry on the true labels (pairs).
//!
//! Protocols:
//! - `label`: the papers' `π = k·α^{5−l'}` with `l'` the label on [1, 5] (missing not at
//!   random: better answers get more feedback);
//! - `covariate`: logistic in a random embedding direction, length and position;
//! - `confounded`: feedback more likely on answers that *look* worse (low projection on the
//!   direction that separates good from bad answers): people react to what they feel
//!   strongly about. The app sees this only through dwell time, which the same impression
//!   drives, as a real app would.

use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};
use crate::feedback::flip::FlipRates;
use crate::feedback::{Examples, Pair};
use crate::math::sigmoid;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Label,
    Covariate,
    Confounded,
}

impl Protocol {
    pub const NAMES: [&'static str; 3] = ["label", "covariate", "confounded"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "label" => Ok(Protocol::Label),
            "covariate" => Ok(Protocol::Covariate),
            "confounded" => Ok(Protocol::Confounded),
            other => Err(Error::unknown("protocol", other, &Self::NAMES)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Label => "label",
            Protocol::Covariate => "covariate",
            Protocol::Confounded => "confounded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    pub protocol: Protocol,
    /// Decay α of the `label` protocol (smaller = stronger bias toward good answers).
    pub alpha: f64,
    /// Mean reaction rate over exposures.
    pub obs_rate: f64,
    /// Flip rates of revealed labels.
    pub flip: FlipRates,
    /// Strength (logit slope) of the covariate / confounded propensity.
    pub strength: f64,
    /// Sharpness of the user's choice among candidates (Bradley–Terry slope on true labels).
    pub choice_sharpness: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            protocol: Protocol::Confounded,
            alpha: 0.5,
            obs_rate: 0.3,
            flip: FlipRates::NONE,
            strength: 1.5,
            choice_sharpness: 3.0,
        }
    }
}

impl SimConfig {
    pub fn validate(&self) -> Result<()> {
        check::in_range("alpha", self.alpha, 1e-3, 1.0)?;
        check::in_range("obs_rate", self.obs_rate, 1e-3, 1.0)?;
        check::in_range("strength", self.strength, 0.0, 20.0)?;
        check::in_range("choice_sharpness", self.choice_sharpness, 0.0, 50.0)?;
        FlipRates::new(self.flip.rho10, self.flip.rho01).map(|_| ())
    }
}

/// Simulated feedback with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulated {
    /// What the app sees. `propensity` is 1.0 until a propensity model fills it in.
    pub examples: Examples,
    /// True binary preference `y`.
    pub truth: Vec<f32>,
    /// True reaction propensity `π` (for tests and diagnostics; never shown to objectives).
    pub true_propensity: Vec<f32>,
}

/// A simulated world: the fixed directions that define length and apparent quality.
#[derive(Debug, Clone)]
pub struct Simulator {
    pub config: SimConfig,
    length_dir: Array1<f32>,
    covariate_dir: Array1<f32>,
    /// Direction separating good from bad answers (the "looks good" impression).
    quality_dir: Array1<f32>,
    /// Standardisation of each projection, from the reference data.
    stats: [(f32, f32); 3],
}

fn unit_random(dim: usize, rng: &mut Rng) -> Array1<f32> {
    let v: Array1<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
    let n = v.dot(&v).sqrt().max(1e-12);
    v / n
}

fn mean_std(v: &Array1<f32>) -> (f32, f32) {
    let n = v.len() as f32;
    let m = v.sum() / n;
    let s = (v.mapv(|x| (x - m) * (x - m)).sum() / n).sqrt().max(1e-6);
    (m, s)
}

/// Solves for the intercept `b` with `mean σ(b + sᵢ) = rate` (bisection: monotone in `b`).
fn intercept_for_rate(scores: &[f64], rate: f64) -> f64 {
    let mean = |b: f64| scores.iter().map(|s| sigmoid(b + s)).sum::<f64>() / scores.len() as f64;
    let (mut lo, mut hi) = (-40.0, 40.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if mean(mid) < rate {
            lo = mid
        } else {
            hi = mid
        }
    }
    0.5 * (lo + hi)
}

impl Simulator {
    /// Builds a world from reference data (the training split): random directions from
    /// `seed`, the quality direction from the class means of the true labels.
    pub fn new(config: SimConfig, emb: ArrayView2<f32>, truth: &[f32], seed: u64) -> Result<Self> {
        config.validate()?;
        let (n, dim) = emb.dim();
        check::non_empty("simulator reference data", n)?;
        check::len("simulator labels", n, truth.len())?;
        check::finite_iter("simulator embeddings", emb.iter())?;
        let mut rng = Rng::new(seed ^ 0x5151);
        let length_dir = unit_random(dim, &mut rng);
        let covariate_dir = unit_random(dim, &mut rng);
        let (mut pos, mut neg) = (Array1::<f32>::zeros(dim), Array1::<f32>::zeros(dim));
        let (mut np, mut nn) = (0.0f32, 0.0f32);
        for (row, &y) in emb.rows().into_iter().zip(truth) {
            if y > 0.5 {
                pos += &row;
                np += 1.0;
            } else {
                neg += &row;
                nn += 1.0;
            }
        }
        if np == 0.0 || nn == 0.0 {
            return Err(Error::InvalidData(
                "the simulator needs both good and bad answers in its reference data".into(),
            ));
        }
        let diff = pos / np - neg / nn;
        let quality_dir = &diff / diff.dot(&diff).sqrt().max(1e-12);
        let stats = [
            mean_std(&emb.dot(&length_dir)),
            mean_std(&emb.dot(&covariate_dir)),
            mean_std(&emb.dot(&quality_dir)),
        ];
        Ok(Simulator {
            config,
            length_dir,
            covariate_dir,
            quality_dir,
            stats,
        })
    }

    fn standardised(&self, emb: ArrayView2<f32>, k: usize) -> Vec<f64> {
        let dir = [&self.length_dir, &self.covariate_dir, &self.quality_dir][k];
        let (m, s) = self.stats[k];
        emb.dot(dir).iter().map(|&v| ((v - m) / s) as f64).collect()
    }

    /// Simulates one round of feedback on `emb` with true labels `scaled` in [0, 1]
    /// (binary or graded), shown in `groups` of candidates.
    pub fn simulate(
        &self,
        emb: ArrayView2<f32>,
        scaled: &[f32],
        groups: &[Vec<usize>],
        rng: &mut Rng,
    ) -> Result<Simulated> {
        let (n, _) = emb.dim();
        check::non_empty("rows to simulate", n)?;
        check::len("labels to simulate", n, scaled.len())?;
        check::finite("labels to simulate", scaled)?;
        check::len("embedding width", self.length_dir.len(), emb.ncols())?;
        if scaled.iter().any(|&l| !(0.0..=1.0).contains(&l)) {
            return Err(Error::InvalidData(
                "simulator labels must be scaled to [0, 1]".into(),
            ));
        }
        let mut grouped = vec![false; n];
        for g in groups {
            for &i in g {
                if i >= n || grouped[i] {
                    return Err(Error::InvalidData(format!(
                        "row {i} is out of range or in two groups"
                    )));
                }
                grouped[i] = true;
            }
        }
        if grouped.iter().any(|g| !g) {
            return Err(Error::InvalidData(
                "every row must belong to exactly one group".into(),
            ));
        }
        let c = &self.config;
        let truth: Vec<f32> = scaled
            .iter()
            .map(|&l| if l > 0.5 { 1.0 } else { 0.0 })
            .collect();
        let length = self.standardised(emb, 0);
        let covariate = self.standardised(emb, 1);
        let quality = self.standardised(emb, 2);

        // Display: positions within each group, and the group size.
        let mut position = vec![0.0f64; n];
        let mut candidates = vec![1.0f64; n];
        for g in groups {
            let mut order = g.clone();
            rng.shuffle(&mut order);
            for (p, &i) in order.iter().enumerate() {
                position[i] = p as f64;
                candidates[i] = g.len() as f64;
            }
        }

        let propensity: Vec<f64> = match c.protocol {
            Protocol::Label => {
                let raw: Vec<f64> = scaled
                    .iter()
                    .map(|&l| c.alpha.powf(5.0 - (1.0 + 4.0 * l as f64)))
                    .collect();
                let k = c.obs_rate / (raw.iter().sum::<f64>() / n as f64);
                raw.iter().map(|r| (k * r).min(1.0)).collect()
            }
            Protocol::Covariate | Protocol::Confounded => {
                let s: Vec<f64> = (0..n)
                    .map(|i| {
                        let shown = -0.5 * position[i];
                        match c.protocol {
                            Protocol::Covariate => {
                                c.strength * covariate[i] + 0.5 * length[i] + shown
                            }
                            _ => -c.strength * quality[i] + shown,
                        }
                    })
                    .collect();
                let b = intercept_for_rate(&s, c.obs_rate);
                s.iter().map(|si| sigmoid(b + si)).collect()
            }
        };

        // Dwell (log seconds): longer answers are read longer; under `confounded` the
        // impression that drives reactions also drives dwell, with noise.
        let log_dwell: Vec<f64> = (0..n)
            .map(|i| {
                let impression = if c.protocol == Protocol::Confounded {
                    -0.8 * quality[i]
                } else {
                    0.0
                };
                1.5 + 0.5 * length[i] + impression + 0.5 * rng.normal()
            })
            .collect();

        let mut feedback = vec![0.0f32; n];
        let mut explicit = vec![0.0f32; n];
        let mut observed = vec![0.0f32; n];
        for i in 0..n {
            if rng.bernoulli(propensity[i]) {
                feedback[i] = 1.0;
                let flip = if truth[i] > 0.5 {
                    c.flip.rho10
                } else {
                    c.flip.rho01
                };
                let noisy = if rng.bernoulli(flip) {
                    1.0 - truth[i]
                } else {
                    truth[i]
                };
                explicit[i] = noisy;
                observed[i] = noisy;
            }
        }

        let mut pairs = Vec::new();
        for g in groups
            .iter()
            .filter(|g| g.len() >= 2 && g.iter().any(|&i| feedback[i] > 0.0))
        {
            // Softmax choice over the group by true labels; the chosen beats every other.
            let weights: Vec<f64> = g
                .iter()
                .map(|&i| (c.choice_sharpness * scaled[i] as f64).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            let mut u = rng.uniform() * total;
            let mut chosen = g[g.len() - 1];
            for (k, &i) in g.iter().enumerate() {
                if u < weights[k] {
                    chosen = i;
                    break;
                }
                u -= weights[k];
            }
            pairs.extend(
                g.iter()
                    .filter(|&&i| i != chosen)
                    .map(|&l| Pair::new(chosen, l)),
            );
        }

        let exposure = Array2::from_shape_fn((n, 4), |(i, j)| match j {
            0 => position[i] as f32,
            1 => (1.0 / candidates[i]) as f32,
            2 => length[i] as f32,
            _ => log_dwell[i] as f32,
        });
        Ok(Simulated {
            examples: Examples {
                emb: emb.to_owned(),
                observed,
                feedback,
                explicit,
                propensity: vec![1.0; n],
                exposure,
                pairs,
                offset: Vec::new(),
            },
            truth,
            true_propensity: propensity.into_iter().map(|p| p as f32).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(protocol: Protocol) -> (Simulator, Array2<f32>, Vec<f32>, Vec<Vec<usize>>) {
        let mut r = Rng::new(3);
        let n = 4000;
        let emb = Array2::from_shape_fn((n, 16), |_| r.normal() as f32);
        let y: Vec<f32> = emb
            .rows()
            .into_iter()
            .map(|x| {
                if x[0] + 0.5 * r.normal() as f32 > 0.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let groups: Vec<Vec<usize>> = (0..n / 2).map(|g| vec![2 * g, 2 * g + 1]).collect();
        let cfg = SimConfig {
            protocol,
            ..Default::default()
        };
        (
            Simulator::new(cfg, emb.view(), &y, 9).unwrap(),
            emb,
            y,
            groups,
        )
    }

    #[test]
    fn reaction_rate_matches_the_configured_rate_for_every_protocol() {
        for protocol in [Protocol::Label, Protocol::Covariate, Protocol::Confounded] {
            let (sim, emb, y, groups) = world(protocol);
            let s = sim
                .simulate(emb.view(), &y, &groups, &mut Rng::new(1))
                .unwrap();
            let mean_pi = s.true_propensity.iter().map(|&p| p as f64).sum::<f64>() / y.len() as f64;
            let rate = s.examples.feedback.iter().map(|&m| m as f64).sum::<f64>() / y.len() as f64;
            assert!(
                (mean_pi - 0.3).abs() < 0.01,
                "{protocol:?}: mean π {mean_pi}"
            );
            assert!((rate - 0.3).abs() < 0.03, "{protocol:?}: rate {rate}");
            s.examples.validate().unwrap();
            assert!(!s.examples.pairs.is_empty());
        }
    }

    #[test]
    fn confounded_feedback_favours_answers_that_look_worse() {
        let (sim, emb, y, groups) = world(Protocol::Confounded);
        let s = sim
            .simulate(emb.view(), &y, &groups, &mut Rng::new(2))
            .unwrap();
        let mean_pi = |label: f32| {
            let v: Vec<f64> = (0..y.len())
                .filter(|&i| y[i] == label)
                .map(|i| s.true_propensity[i] as f64)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(
            mean_pi(0.0) > mean_pi(1.0) + 0.1,
            "bad answers should get more feedback"
        );
    }
}
