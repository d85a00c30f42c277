//! `beta` (ICRM-style): a two-output head gives the mean `μ = σ(s)` and confidence
//! `τ = softplus(u) + τ_min` of `Beta(μτ, (1−μ)τ)` over the probability that the user prefers
//! the response. The loss is the expected negative log-likelihood of the (effective) outcome
//! under that Beta plus `λ·KL(Beta(a,b) ‖ Beta(α₀,β₀))` in closed form. Uncertainty then
//! lets an app steer a user's model at test time without gradient steps: `k` wins in `n`
//! in-context demonstrations give the conjugate posterior `Beta(a+k, b+n−k)`.
//!
//! With an effective target `t` the likelihood term is `w·[t·ℓ⁺ + (1−t)·ℓ⁻]` with
//! `ℓ⁺ = −E[log p] = ψ(a+b) − ψ(a)` and `ℓ⁻ = −E[log(1−p)] = ψ(a+b) − ψ(b)`, both ≥ 0, so the
//! debiased targets and the non-negative correction carry over unchanged.

use serde::{Deserialize, Serialize};

use crate::error::{check, Result};
use crate::math::{digamma, lgamma, sigmoid, softplus, trigamma};

use super::bce::{clip_logit, mask_clipped_gradient};
use super::nonneg::{self, PartialRisks};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BetaParams {
    /// Weight λ of the KL term.
    pub lambda: f64,
    /// Prior `Beta(α₀, β₀)`.
    pub alpha0: f64,
    pub beta0: f64,
    /// Floor on the confidence τ, keeping both Beta parameters away from 0.
    pub tau_min: f64,
}

impl Default for BetaParams {
    fn default() -> Self {
        BetaParams {
            lambda: 0.01,
            alpha0: 1.0,
            beta0: 1.0,
            tau_min: 0.5,
        }
    }
}

impl BetaParams {
    pub fn validate(&self) -> Result<()> {
        check::in_range("beta.lambda", self.lambda, 0.0, 1e3)?;
        check::in_range("beta.alpha0", self.alpha0, 1e-3, 1e6)?;
        check::in_range("beta.beta0", self.beta0, 1e-3, 1e6)?;
        check::in_range("beta.tau_min", self.tau_min, 1e-3, 1e3)
    }
}

/// Largest magnitude of the mean logit the loss lets through.
pub const MAX_MEAN_LOGIT: f64 = 15.0;

/// `(a, b)` of the Beta from the two head outputs.
pub fn beta_params(s: f64, u: f64, p: &BetaParams) -> (f64, f64) {
    let mu = sigmoid(s);
    let tau = softplus(u) + p.tau_min;
    (mu * tau, (1.0 - mu) * tau)
}

/// `KL(Beta(a,b) ‖ Beta(a0,b0))` in closed form.
pub fn kl(a: f64, b: f64, a0: f64, b0: f64) -> f64 {
    let ln_beta = |x: f64, y: f64| lgamma(x) + lgamma(y) - lgamma(x + y);
    ln_beta(a0, b0) - ln_beta(a, b)
        + (a - a0) * digamma(a)
        + (b - b0) * digamma(b)
        + (a0 - a + b0 - b) * digamma(a + b)
}

/// Conjugate in-context update: `k` wins out of `n` demonstrations.
pub fn posterior(a: f64, b: f64, wins: u32, trials: u32) -> (f64, f64) {
    let k = wins.min(trials) as f64;
    (a + k, b + trials as f64 - k)
}

/// Mean loss over the batch and gradients with respect to `s` and `u`.
/// The mean logit `s` is clipped like every other objective's logit, but never beyond
/// [`MAX_MEAN_LOGIT`]: that keeps both Beta parameters ≥ `τ_min·σ(−15)` and the trigamma
/// terms of the gradient within f32 range.
pub fn loss(
    s: &[f32],
    u: &[f32],
    w: &[f32],
    t: &[f32],
    p: &BetaParams,
    nonneg_enabled: bool,
    logit_limit: f64,
) -> (f64, Vec<f32>, Vec<f32>) {
    let n = s.len();
    let inv_n = 1.0 / n.max(1) as f64;
    let logit_limit = logit_limit.min(MAX_MEAN_LOGIT);
    struct Row {
        mu: f64,
        tau: f64,
        sig_u: f64,
        // d/da, d/db of ℓ⁺, ℓ⁻ and KL.
        dpos: (f64, f64),
        dneg: (f64, f64),
        dkl: (f64, f64),
        coef: (f64, f64),
    }
    let mut risks = PartialRisks {
        positive: 0.0,
        negative: 0.0,
    };
    let mut kl_total = 0.0;
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let (si, _) = clip_logit(s[i] as f64, logit_limit);
        // u is the confidence input, not a logit: clipping it would cap τ; it stays unclipped.
        let ui = u[i] as f64;
        let (a, b) = beta_params(si, ui, p);
        let (psi_a, psi_b, psi_ab) = (digamma(a), digamma(b), digamma(a + b));
        let (tri_a, tri_b, tri_ab) = (trigamma(a), trigamma(b), trigamma(a + b));
        let (wi, ti) = (w[i] as f64, t[i] as f64);
        let coef = (wi * ti, wi * (1.0 - ti));
        risks.positive += coef.0 * (psi_ab - psi_a) * inv_n;
        risks.negative += coef.1 * (psi_ab - psi_b) * inv_n;
        kl_total += kl(a, b, p.alpha0, p.beta0) * inv_n;
        let rest = p.alpha0 + p.beta0 - a - b;
        rows.push(Row {
            mu: sigmoid(si),
            tau: softplus(ui) + p.tau_min,
            sig_u: sigmoid(ui),
            dpos: (tri_ab - tri_a, tri_ab),
            dneg: (tri_ab, tri_ab - tri_b),
            dkl: (
                (a - p.alpha0) * tri_a + rest * tri_ab,
                (b - p.beta0) * tri_b + rest * tri_ab,
            ),
            coef,
        });
    }
    let c = nonneg::correct(risks, nonneg_enabled);
    let mut ds = Vec::with_capacity(n);
    let mut du = Vec::with_capacity(n);
    for (i, r) in rows.iter().enumerate() {
        let cp = c.positive_scale * r.coef.0;
        let cn = c.negative_scale * r.coef.1;
        let da = inv_n * (cp * r.dpos.0 + cn * r.dneg.0 + p.lambda * r.dkl.0);
        let db = inv_n * (cp * r.dpos.1 + cn * r.dneg.1 + p.lambda * r.dkl.1);
        // a = μτ, b = (1−μ)τ; μ = σ(s), τ = softplus(u) + τ_min.
        let d_mu = r.tau * (da - db);
        let d_tau = r.mu * da + (1.0 - r.mu) * db;
        ds.push(mask_clipped_gradient(s[i] as f64, logit_limit, d_mu * r.mu * (1.0 - r.mu)) as f32);
        du.push((d_tau * r.sig_u) as f32);
    }
    (c.loss + p.lambda * kl_total, ds, du)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_at_the_prior_and_positive_elsewhere() {
        assert!(kl(2.0, 3.0, 2.0, 3.0).abs() < 1e-12);
        assert!(kl(5.0, 1.0, 1.0, 1.0) > 0.1);
    }

    #[test]
    fn conjugate_update_moves_the_mean_toward_the_wins() {
        let (a, b) = beta_params(0.0, 0.0, &BetaParams::default());
        let prior_mean = a / (a + b);
        let (a2, b2) = posterior(a, b, 8, 10);
        let post_mean = a2 / (a2 + b2);
        assert!((prior_mean - 0.5).abs() < 1e-12);
        assert!(post_mean > 0.7 && post_mean < 0.8, "{post_mean}");
        assert_eq!(posterior(1.0, 1.0, 12, 10), (11.0, 1.0)); // wins capped at trials
    }
}
