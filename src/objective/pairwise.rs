//! `pairwise`: Bradley–Terry on choices among candidates shown together (the user copied
//! one answer, or regenerated away from another), `ℓ = w·sp(−(z_w − z_l))`, with OCRM's
//! importance weights when the app passes the responses' log-probabilities under the current
//! (`new`) and logging (`old`) policies.

use serde::{Deserialize, Serialize};

use crate::math::{sigmoid, softplus};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OcrmParams {
    /// Mixture weight α of the α-skewed ratio (default 0.1).
    pub alpha: f64,
    /// Temper β applied to the summed log-ratios (default 1.0).
    pub beta: f64,
}

impl Default for OcrmParams {
    fn default() -> Self {
        OcrmParams {
            alpha: 0.1,
            beta: 1.0,
        }
    }
}

/// `log ρ_α = lp_new − logaddexp(log α + lp_new, log(1−α) + lp_old)`: the α-skewed ratio,
/// bounded above by `−log α`, so no pair can dominate however unlikely it was to be logged.
pub fn log_skewed_ratio(lp_new: f64, lp_old: f64, alpha: f64) -> f64 {
    let x = alpha.ln() + lp_new;
    let y = (1.0 - alpha).ln() + lp_old;
    let m = x.max(y);
    lp_new - (m + ((x - m).exp() + (y - m).exp()).ln())
}

/// Pair weight `exp(β·(log ρ_α(w) + log ρ_α(l)))`, computed in log space.
pub fn ocrm_weight(lp_new: [f64; 2], lp_old: [f64; 2], p: OcrmParams) -> f64 {
    let log_w = p.beta
        * (log_skewed_ratio(lp_new[0], lp_old[0], p.alpha)
            + log_skewed_ratio(lp_new[1], lp_old[1], p.alpha));
    log_w.exp()
}

/// Mean over pairs of `w·sp(−(z_w − z_l))` and its gradient with respect to every row's
/// logit. `pairs` holds `(winner_row, loser_row, weight)` indexing into `z`.
pub fn loss(z: &[f32], pairs: &[(usize, usize, f32)]) -> (f64, Vec<f32>) {
    let inv_p = 1.0 / pairs.len().max(1) as f64;
    let mut grad = vec![0.0f64; z.len()];
    let mut total = 0.0;
    for &(w, l, weight) in pairs {
        let delta = z[w] as f64 - z[l] as f64;
        total += weight as f64 * softplus(-delta) * inv_p;
        let g = weight as f64 * sigmoid(-delta) * inv_p;
        grad[w] -= g;
        grad[l] += g;
    }
    (total, grad.into_iter().map(|g| g as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_ratio_matches_direct_formula_and_is_bounded() {
        let (lpn, lpo, a) = (-3.0f64, -5.0f64, 0.1f64);
        let direct = (lpn.exp() / (a * lpn.exp() + (1.0 - a) * lpo.exp())).ln();
        assert!((log_skewed_ratio(lpn, lpo, a) - direct).abs() < 1e-12);
        // Log-probabilities far below f64's range stay finite and ≤ −log α.
        let r = log_skewed_ratio(-2000.0, -5000.0, a);
        assert!(r.is_finite() && r <= -a.ln() + 1e-12);
    }
}
