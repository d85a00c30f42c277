//! The weighted-logistic family: `naive`, `ips`, `snips`, `noise`, `noise-ips`, `dr` (and the
//! `oracle`, which is `naive` on true labels). Each is a transform from feedback to a
//! per-row weight `w` and effective target `t`; one loss, `ℓ = w·(sp(z) − t·z)` with
//! `∂ℓ/∂z = w·(σ(z) − t)`, then serves them all (DESIGN §3).

use crate::feedback::flip::FlipRates;
use crate::math::{sigmoid, softplus};

use super::nonneg::{self, PartialRisks};

/// Natarajan et al.'s noise-corrected target for an observed noisy label `ỹ ∈ {0,1}`:
/// `ỹ=1 → (1−ρ₀₁)/D`, `ỹ=0 → −ρ₀₁/D`, `D = 1−ρ₀₁−ρ₁₀` floored at 0.1 so that a bad flip
/// estimate cannot blow the targets up. Its expectation over flips is the clean label.
pub fn noise_corrected_target(noisy: f64, flip: FlipRates) -> f64 {
    let d = (1.0 - flip.rho01 - flip.rho10).max(0.1);
    if noisy > 0.5 {
        (1.0 - flip.rho01) / d
    } else {
        -flip.rho01 / d
    }
}

/// The propensity as used for weighting, clipped below at `clip` (default 0.1) to bound
/// the variance that a tiny propensity would add.
pub fn clipped_propensity(p: f64, clip: f64) -> f64 {
    p.max(clip)
}

/// Clamps a logit to `±limit`; the gradient is kept only where it points back inside.
pub fn clip_logit(z: f64, limit: f64) -> (f64, bool) {
    if z > limit {
        (limit, true)
    } else if z < -limit {
        (-limit, true)
    } else {
        (z, false)
    }
}

pub fn mask_clipped_gradient(z: f64, limit: f64, grad: f64) -> f64 {
    // At z > limit descent (−grad) must lower z, i.e. grad > 0; symmetric below.
    if (z > limit && grad < 0.0) || (z < -limit && grad > 0.0) {
        0.0
    } else {
        grad
    }
}

/// Mean over the batch of `w·(sp(z) − t·z)` and its gradient, with the non-negative
/// correction applied to the two class-wise partial risks when `nonneg` is set.
pub fn loss(
    z: &[f32],
    w: &[f32],
    t: &[f32],
    nonneg_enabled: bool,
    logit_limit: f64,
) -> (f64, Vec<f32>) {
    let n = z.len();
    let inv_n = 1.0 / n.max(1) as f64;
    let mut risks = PartialRisks {
        positive: 0.0,
        negative: 0.0,
    };
    let mut parts = Vec::with_capacity(n);
    for i in 0..n {
        let (zc, _) = clip_logit(z[i] as f64, logit_limit);
        let (wi, ti) = (w[i] as f64, t[i] as f64);
        let (a, b) = (wi * ti, wi * (1.0 - ti));
        // ℓ⁺ = sp(−z) = −log σ(z), ℓ⁻ = sp(z) = −log(1−σ(z)).
        risks.positive += a * softplus(-zc) * inv_n;
        risks.negative += b * softplus(zc) * inv_n;
        parts.push((zc, a, b));
    }
    let c = nonneg::correct(risks, nonneg_enabled);
    let grad = parts
        .iter()
        .zip(z)
        .map(|(&(zc, a, b), &zraw)| {
            let s = sigmoid(zc);
            let g = inv_n * (-c.positive_scale * a * (1.0 - s) + c.negative_scale * b * s);
            mask_clipped_gradient(zraw as f64, logit_limit, g) as f32
        })
        .collect();
    (c.loss, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrected_targets_are_unbiased_over_flips() {
        let flip = FlipRates {
            rho10: 0.2,
            rho01: 0.1,
        };
        let t1 = noise_corrected_target(1.0, flip);
        let t0 = noise_corrected_target(0.0, flip);
        // y = 1: ỹ = 1 w.p. 1−ρ₁₀; y = 0: ỹ = 1 w.p. ρ₀₁.
        assert!(((1.0 - flip.rho10) * t1 + flip.rho10 * t0 - 1.0).abs() < 1e-12);
        assert!((flip.rho01 * t1 + (1.0 - flip.rho01) * t0).abs() < 1e-12);
    }

    #[test]
    fn equals_weighted_logistic_loss_without_correction() {
        let z = [0.3f32, -1.2, 2.0];
        let w = [1.0f32, 2.0, 0.5];
        let t = [1.0f32, 0.0, 3.0];
        let (l, _) = loss(&z, &w, &t, false, 15.0);
        let direct: f64 = (0..3)
            .map(|i| w[i] as f64 * (softplus(z[i] as f64) - t[i] as f64 * z[i] as f64))
            .sum::<f64>()
            / 3.0;
        assert!((l - direct).abs() < 1e-12);
    }
}
