//! Flip rates of noisy explicit labels, `ρ₁₀ = P(ỹ=0 | y=1)` and `ρ₀₁ = P(ỹ=1 | y=0)`,
//! configured or estimated from anchor points.
//!
//! Anchor estimator: a head trained on the noisy labels predicts `P(ỹ=1|x) =
//! (1−ρ₁₀)·P(y=1|x) + ρ₀₁·P(y=0|x)`. Where `x` is surely negative this equals `ρ₀₁`, where
//! surely positive `1−ρ₁₀`; low and high quantiles of the predictions stand in for those
//! anchors (the minimum and maximum would chase outliers).

use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlipRates {
    /// P(ỹ = 0 | y = 1).
    pub rho10: f64,
    /// P(ỹ = 1 | y = 0).
    pub rho01: f64,
}

impl FlipRates {
    pub const NONE: FlipRates = FlipRates {
        rho10: 0.0,
        rho01: 0.0,
    };

    pub fn new(rho10: f64, rho01: f64) -> Result<Self> {
        check::in_range("rho10", rho10, 0.0, 0.49)?;
        check::in_range("rho01", rho01, 0.0, 0.49)?;
        Ok(FlipRates { rho10, rho01 })
    }
}

/// Anchor-point estimate from noisy-label probabilities; quantiles `lo`, `hi` (e.g. 0.03, 0.97).
pub fn estimate_flip_rates(noisy_probs: &[f32], lo: f64, hi: f64) -> Result<FlipRates> {
    check::non_empty("noisy-label predictions", noisy_probs.len())?;
    check::finite("noisy-label predictions", noisy_probs)?;
    if !(0.0..0.5).contains(&lo) || !(0.5..=1.0).contains(&hi) {
        return Err(Error::InvalidConfig(format!(
            "anchor quantiles ({lo}, {hi}) must satisfy 0 ≤ lo < 0.5 ≤ hi ≤ 1"
        )));
    }
    let mut sorted: Vec<f64> = noisy_probs.iter().map(|&p| p as f64).collect();
    crate::math::sort_by(&mut sorted, f64::total_cmp);
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    // Clamp into the range where the noise-corrected loss stays defined.
    Ok(FlipRates {
        rho01: q(lo).clamp(0.0, 0.45),
        rho10: (1.0 - q(hi)).clamp(0.0, 0.45),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn anchors_recover_known_flip_rates() {
        // Clean posteriors spread over [0, 1] with mass near both ends, as a trained head gives.
        let mut r = Rng::new(5);
        let (rho10, rho01) = (0.2, 0.1);
        let probs: Vec<f32> = (0..50_000)
            .map(|_| {
                let clean = crate::math::sigmoid(r.normal() * 6.0);
                ((1.0 - rho10) * clean + rho01 * (1.0 - clean)) as f32
            })
            .collect();
        let est = estimate_flip_rates(&probs, 0.03, 0.97).unwrap();
        assert!((est.rho10 - rho10).abs() < 0.02, "{est:?}");
        assert!((est.rho01 - rho01).abs() < 0.02, "{est:?}");
        assert!(estimate_flip_rates(&[], 0.03, 0.97).is_err());
        assert!(estimate_flip_rates(&[0.5, f32::NAN], 0.03, 0.97).is_err());
        assert!(FlipRates::new(0.6, 0.0).is_err());
    }
}
