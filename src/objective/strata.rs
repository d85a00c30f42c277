//! `implicit` (ImplicitRM-style): an observed positive `o = O·R` is the product of an
//! exposure event `O` (the user engaged) and a preference `R` (the user liked it). Two heads
//! on the same exposure: `μ = σ(a) = P(O=1|x)` from exposure features and `γ = σ(z) = P(R=1|x)`
//! from the embedding (the reward). The four latent strata are the (O, R) pairs.
//!
//! E-step (heads detached): for `o = 1` both are 1; for `o = 0`
//! `P(O=1|o=0) = μ(1−γ)/(1−μγ)` and `P(R=1|o=0) = γ(1−μ)/(1−μγ)`.
//! M-step: each head's logistic loss toward its posterior. At the current parameters the
//! M-step gradient of each head equals the gradient of the observed-data likelihood
//! `−[o·log(μγ) + (1−o)·log(1−μγ)]` (the EM identity), so this module computes that
//! likelihood, with `log(1−μγ) = log1mexp(logσ(a) + logσ(z))` for stability, and its exact
//! gradients; `posterior` is exposed for diagnostics and tests.
//!
//! Keeping exposure features (position, length, dwell) in μ only, and the embedding in γ
//! only, is what stops the heads from swapping roles: a symmetric model cannot tell which
//! factor is "exposure". When exposure and preference depend on the same embedding features
//! the split is not identified, and `implicit` degrades toward `naive` (see README).

use crate::math::{log1mexp, log_sigmoid, sigmoid};

use super::bce::{clip_logit, mask_clipped_gradient};

/// `(P(O=1|o=0), P(R=1|o=0))` for exposure probability `mu` and preference `gamma`.
pub fn posterior(mu: f64, gamma: f64) -> (f64, f64) {
    let denom = 1.0 - mu * gamma;
    (mu * (1.0 - gamma) / denom, gamma * (1.0 - mu) / denom)
}

/// Mean observed-data negative log-likelihood over the batch and its gradients with respect
/// to the preference logits `z` and exposure logits `a`.
pub fn loss(z: &[f32], a: &[f32], observed: &[f32], logit_limit: f64) -> (f64, Vec<f32>, Vec<f32>) {
    let n = z.len();
    let inv_n = 1.0 / n.max(1) as f64;
    let mut total = 0.0;
    let mut dz = Vec::with_capacity(n);
    let mut da = Vec::with_capacity(n);
    for i in 0..n {
        let (zc, _) = clip_logit(z[i] as f64, logit_limit);
        let (ac, _) = clip_logit(a[i] as f64, logit_limit);
        let (gamma, mu) = (sigmoid(zc), sigmoid(ac));
        let log_joint = log_sigmoid(zc) + log_sigmoid(ac); // log(μγ)
        let (l, gz, ga) = if observed[i] > 0.5 {
            (-log_joint, -(1.0 - gamma), -(1.0 - mu))
        } else {
            let log_rest = log1mexp(log_joint.min(-1e-300)); // log(1−μγ)
            let ratio = (log_joint - log_rest).exp(); // μγ / (1−μγ)
            (-log_rest, ratio * (1.0 - gamma), ratio * (1.0 - mu))
        };
        total += l * inv_n;
        dz.push(mask_clipped_gradient(z[i] as f64, logit_limit, gz * inv_n) as f32);
        da.push(mask_clipped_gradient(a[i] as f64, logit_limit, ga * inv_n) as f32);
    }
    (total, dz, da)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_equals_em_posterior_residual() {
        // For o = 0 the M-step residual of γ is γ − P(R=1|o=0), of μ is μ − P(O=1|o=0).
        for &(z, a) in &[(0.3f32, -0.4f32), (2.0, 1.5), (-3.0, 0.2)] {
            let (_, dz, da) = loss(&[z], &[a], &[0.0], 15.0);
            let (gamma, mu) = (sigmoid(z as f64), sigmoid(a as f64));
            let (p_o, p_r) = posterior(mu, gamma);
            assert!((dz[0] as f64 - (gamma - p_r)).abs() < 1e-6);
            assert!((da[0] as f64 - (mu - p_o)).abs() < 1e-6);
        }
    }

    #[test]
    fn stable_when_both_heads_are_confident() {
        let (l, dz, da) = loss(&[14.0], &[14.0], &[0.0], 15.0);
        assert!(l.is_finite() && dz[0].is_finite() && da[0].is_finite());
        let (l1, _, _) = loss(&[-40.0], &[-40.0], &[1.0], 15.0);
        assert!(l1.is_finite());
    }
}
