//! The aggregation math of a round, pure and deterministic given its noise seed.
//!
//! 1. Each delta is clipped to L2 norm `clip_norm` (bounding any one client's influence).
//! 2. The clipped deltas are combined: FedAvg's example-weighted mean with each weight
//!    capped at `weight_cap` (self-reported counts must not buy the round: a client claiming
//!    10¹² examples weighs what one at the cap does), or, against poisoned updates, the
//!    coordinate-wise trimmed mean or median (unweighted, for the same reason). One
//!    contribution is one client: the caller merges a client's updates of a round first, so
//!    that a client cannot outvote the others by pushing many.
//! 3. The combined step is clipped to `clip_norm` again, so that a round moves the global by
//!    at most the bound whatever the aggregator (a coordinate-wise median of bounded vectors
//!    is not itself bounded by the same norm).
//! 4. Optional Gaussian noise of standard deviation `noise_std` per coordinate (the Gaussian
//!    mechanism of DP-FedAvg; its privacy accounting is the operator's to choose).
//!
//! With [`DpFedAvg`] set (client-level DP-FedAvg, McMahan et al. 2018, DESIGN §12) step 2 is
//! instead the fixed-denominator estimator `Σ clip(Δᵢ, C) / cohort` whatever `aggregator` and
//! the example counts say: every client weighs 1 and the denominator is the *expected* cohort,
//! not the number that came, so that adding or removing one client moves the step by at most
//! `C / cohort` (its sensitivity; a weighted or robust combination would not have this bound).
//! The step is then clipped to `C` (a projection: the sensitivity stays `C / cohort`) and
//! N(0, (z·C / cohort)²) is added to every coordinate — the sampled Gaussian mechanism that
//! [`crate::sync::privacy`] accounts for, scaled by `1 / cohort`.

use crate::rng::Rng;
use crate::sync::delta::l2_norm;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregator {
    Mean,
    /// Drops `fraction` of the values at each end of every coordinate.
    TrimmedMean {
        fraction: f64,
    },
    Median,
}

impl Aggregator {
    pub fn name(self) -> String {
        match self {
            Aggregator::Mean => "mean".into(),
            Aggregator::TrimmedMean { fraction } => format!("trimmed-mean({fraction})"),
            Aggregator::Median => "median".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AggregationConfig {
    pub aggregator: Aggregator,
    pub clip_norm: f64,
    pub noise_std: f64,
    /// FedAvg weight of a contribution: min(n_examples, weight_cap).
    pub weight_cap: u64,
    /// Client-level DP-FedAvg: replaces the combination and adds calibrated noise.
    pub dp: Option<DpFedAvg>,
}

/// The parameters of client-level DP-FedAvg (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpFedAvg {
    /// z: the noise standard deviation in units of the sensitivity of the sum, `C`.
    pub noise_multiplier: f64,
    /// The expected number of clients of a round: the estimator's fixed denominator (≥ 1).
    pub expected_cohort: u64,
}

impl AggregationConfig {
    /// The standard deviation of the DP noise per coordinate of the step, `z·C / cohort`
    /// (0 without DP).
    pub fn dp_noise_std(&self) -> f64 {
        self.dp.map_or(0.0, |dp| {
            dp.noise_multiplier * self.clip_norm / dp.expected_cohort.max(1) as f64
        })
    }
}

/// One client's contribution to a round.
pub struct Contribution {
    pub delta: Vec<f32>,
    pub n_examples: u64,
}

/// Scales to norm at most `bound`.
pub fn clip_f64(values: &mut [f64], bound: f64) {
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > bound {
        let scale = bound / norm;
        values.iter_mut().for_each(|v| *v *= scale);
    }
}

/// The step to add to the global. `contributions` is non-empty and every delta has `len`
/// values (the caller checked shapes when the updates were accepted).
pub fn combine(
    contributions: &[Contribution],
    len: usize,
    config: &AggregationConfig,
    noise_seed: u64,
) -> Vec<f32> {
    let mut clipped: Vec<(Vec<f64>, f64)> = contributions
        .iter()
        .map(|c| {
            let norm = l2_norm(&c.delta);
            let scale = if norm > config.clip_norm {
                config.clip_norm / norm
            } else {
                1.0
            };
            let values = c.delta.iter().map(|&v| f64::from(v) * scale).collect();
            (values, c.n_examples.min(config.weight_cap) as f64)
        })
        .collect();
    let step = match (config.dp, config.aggregator) {
        (Some(dp), _) => {
            let mut sum = vec![0.0f64; len];
            for (values, _) in &clipped {
                for (s, v) in sum.iter_mut().zip(values) {
                    *s += v;
                }
            }
            let cohort = dp.expected_cohort.max(1) as f64;
            sum.iter_mut().for_each(|s| *s /= cohort);
            sum
        }
        (None, Aggregator::Mean) => {
            let mut total: f64 = clipped.iter().map(|(_, n)| n).sum();
            if total <= 0.0 {
                // Every client claimed zero examples: an unweighted mean, never 0/0.
                clipped.iter_mut().for_each(|(_, n)| *n = 1.0);
                total = clipped.len() as f64;
            }
            let mut sum = vec![0.0f64; len];
            for (values, n) in &clipped {
                for (s, v) in sum.iter_mut().zip(values) {
                    *s += n * v;
                }
            }
            sum.iter_mut().for_each(|s| *s /= total);
            sum
        }
        (None, Aggregator::TrimmedMean { fraction }) => {
            let m = clipped.len();
            // Never trim everything: at least one value per coordinate remains.
            let cut = ((fraction * m as f64).floor() as usize).min((m - 1) / 2);
            coordinate_wise(&clipped, len, |column| {
                let kept = &column[cut..m - cut];
                kept.iter().sum::<f64>() / kept.len() as f64
            })
        }
        (None, Aggregator::Median) => coordinate_wise(&clipped, len, |column| {
            let m = column.len();
            if m % 2 == 1 {
                column[m / 2]
            } else {
                (column[m / 2 - 1] + column[m / 2]) / 2.0
            }
        }),
    };
    finish(step, config, noise_seed)
}

/// The step of a round under secure aggregation, from the unmasked sum of `count` clipped
/// deltas (the server never sees one, so only the mean applies): `sum / count`, or under DP
/// the same fixed-denominator estimator as [`combine`], `sum / expected cohort`; then the
/// same clip of the step and the same noise, added after unmasking.
pub fn secure_step(
    sum: &[f64],
    count: usize,
    config: &AggregationConfig,
    noise_seed: u64,
) -> Vec<f32> {
    let denominator = match config.dp {
        Some(dp) => dp.expected_cohort.max(1) as f64,
        None => count.max(1) as f64,
    };
    finish(
        sum.iter().map(|s| s / denominator).collect(),
        config,
        noise_seed,
    )
}

/// Steps 3 and 4: the step's clip, then the Gaussian noise.
fn finish(mut step: Vec<f64>, config: &AggregationConfig, noise_seed: u64) -> Vec<f32> {
    clip_f64(&mut step, config.clip_norm);
    // Independent Gaussians add in variance: one draw of the combined spread.
    let std = config.noise_std.hypot(config.dp_noise_std());
    if std > 0.0 {
        let mut rng = Rng::new(noise_seed);
        step.iter_mut().for_each(|s| *s += std * rng.normal());
    }
    step.into_iter().map(|v| v as f32).collect()
}

/// Applies `statistic` to every coordinate's sorted values.
fn coordinate_wise(
    clipped: &[(Vec<f64>, f64)],
    len: usize,
    statistic: impl Fn(&[f64]) -> f64,
) -> Vec<f64> {
    let mut column = vec![0.0f64; clipped.len()];
    (0..len)
        .map(|j| {
            for (slot, (values, _)) in column.iter_mut().zip(clipped) {
                *slot = values[j];
            }
            column.sort_by(f64::total_cmp);
            statistic(&column)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(aggregator: Aggregator, noise_std: f64) -> AggregationConfig {
        AggregationConfig {
            aggregator,
            clip_norm: 1e9,
            noise_std,
            weight_cap: u64::MAX,
            dp: None,
        }
    }

    #[test]
    fn the_fedavg_weight_is_capped_and_zero_counts_give_a_plain_mean() {
        let pair = |a: u64, b: u64| {
            [
                Contribution {
                    delta: vec![1.0],
                    n_examples: a,
                },
                Contribution {
                    delta: vec![4.0],
                    n_examples: b,
                },
            ]
        };
        let capped = AggregationConfig {
            weight_cap: 100,
            ..config(Aggregator::Mean, 0.0)
        };
        // Weights 100 and 50 (the claim of 10¹² counts as 100): (100·1 + 50·4) / 150 = 2.
        assert_eq!(
            combine(&pair(1_000_000_000_000, 50), 1, &capped, 0),
            vec![2.0]
        );
        // u64::MAX examples under no cap: finite, and the heavy client's delta.
        let step = combine(&pair(u64::MAX, 1), 1, &config(Aggregator::Mean, 0.0), 0);
        assert!((step[0] - 1.0).abs() < 1e-6, "{step:?}");
        // Zero examples everywhere: the plain mean 2.5, not NaN.
        assert_eq!(combine(&pair(0, 0), 1, &capped, 0), vec![2.5]);
    }

    #[test]
    fn gaussian_noise_has_the_configured_spread_and_zero_mean() {
        let len = 20_000;
        let zero = [Contribution {
            delta: vec![0.0; len],
            n_examples: 1,
        }];
        let step = combine(&zero, len, &config(Aggregator::Mean, 0.5), 42);
        let mean = step.iter().map(|&v| f64::from(v)).sum::<f64>() / len as f64;
        let var = step
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / len as f64;
        // Standard errors at n = 20 000: mean 0.0035, std ≈ 0.0025.
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "{}", var.sqrt());
        // Without noise the step is exactly the mean.
        let clean = combine(&zero, len, &config(Aggregator::Mean, 0.0), 42);
        assert!(clean.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn trimming_never_removes_every_value() {
        let two = [
            Contribution {
                delta: vec![1.0],
                n_examples: 1,
            },
            Contribution {
                delta: vec![3.0],
                n_examples: 1,
            },
        ];
        let step = combine(
            &two,
            1,
            &config(Aggregator::TrimmedMean { fraction: 0.49 }, 0.0),
            0,
        );
        assert_eq!(step, vec![2.0]);
        assert_eq!(
            combine(&two, 1, &config(Aggregator::Median, 0.0), 0),
            vec![2.0]
        );
    }

    #[test]
    fn each_delta_and_the_step_are_clipped_to_the_bound() {
        let big = [Contribution {
            delta: vec![30.0, 40.0],
            n_examples: 1,
        }];
        let cfg = AggregationConfig {
            aggregator: Aggregator::Mean,
            clip_norm: 5.0,
            noise_std: 0.0,
            weight_cap: 1,
            dp: None,
        };
        assert_eq!(combine(&big, 2, &cfg, 0), vec![3.0, 4.0]);
    }

    #[test]
    fn dp_fedavg_sums_clipped_deltas_over_the_expected_cohort_and_adds_z_c_over_cohort() {
        // Two clients, expected cohort 4, C = 5: each clipped, summed, divided by 4 (not 2),
        // example counts ignored.
        let two = [
            Contribution {
                delta: vec![30.0, 40.0],
                n_examples: 1_000,
            },
            Contribution {
                delta: vec![1.0, 0.0],
                n_examples: 1,
            },
        ];
        let mut cfg = AggregationConfig {
            aggregator: Aggregator::Median,
            clip_norm: 5.0,
            noise_std: 0.0,
            weight_cap: 1_000,
            dp: Some(DpFedAvg {
                noise_multiplier: 0.0,
                expected_cohort: 4,
            }),
        };
        assert_eq!(combine(&two, 2, &cfg, 0), vec![1.0, 1.0]);
        // Noise of z·C/cohort = 2·5/4 = 2.5 per coordinate.
        cfg.dp = Some(DpFedAvg {
            noise_multiplier: 2.0,
            expected_cohort: 4,
        });
        assert_eq!(cfg.dp_noise_std(), 2.5);
        let len = 20_000;
        let zero = [Contribution {
            delta: vec![0.0; len],
            n_examples: 1,
        }];
        let step = combine(&zero, len, &cfg, 7);
        let var = step.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / len as f64;
        // Standard error of the std at n = 20 000: 2.5 / √40 000 = 0.0125.
        assert!((var.sqrt() - 2.5).abs() < 0.1, "{}", var.sqrt());
    }
}
