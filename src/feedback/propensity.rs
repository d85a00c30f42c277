//! The propensity model: `π̂ = P(user reacts | exposure features)`, a logistic regression
//! fitted on every exposure (the app sees reactions of both signs, so the reaction mask is
//! observed even though the preference is not).
//!
//! Fitted by Newton's method with a small ridge penalty on standardised features. A
//! maximum-likelihood logistic fit with an intercept is calibrated in the large (mean
//! prediction = observed reaction rate), which is what inverse weighting needs.

use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};
use crate::math::sigmoid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropensityModel {
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// Coefficients on standardised features, intercept last.
    coef: Vec<f64>,
}

const MAX_ITERS: usize = 50;

impl PropensityModel {
    /// Fits `P(reacted = 1 | features)` with ridge strength `l2` (on the standardised scale).
    pub fn fit(features: ArrayView2<f32>, reacted: &[f32], l2: f64) -> Result<Self> {
        let (n, k) = features.dim();
        check::non_empty("propensity training set", n)?;
        check::len("reaction mask", n, reacted.len())?;
        check::finite_iter("exposure features", features.iter())?;
        check::finite("reaction mask", reacted)?;
        check::in_range("propensity l2", l2, 0.0, 1e6)?;
        let positives = reacted.iter().filter(|&&r| r > 0.5).count();
        if positives == 0 || positives == n {
            return Err(Error::InvalidData(format!(
                "propensity needs both reacted and silent exposures ({positives} of {n} reacted)"
            )));
        }
        let mut mean = vec![0.0; k];
        let mut scale = vec![1.0; k];
        for j in 0..k {
            let col = features.column(j);
            let m = col.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = col.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
            mean[j] = m;
            scale[j] = if var > 1e-12 { var.sqrt() } else { 1.0 };
        }
        // Design matrix with an intercept column.
        let x = Array2::from_shape_fn((n, k + 1), |(i, j)| {
            if j == k {
                1.0
            } else {
                (features[[i, j]] as f64 - mean[j]) / scale[j]
            }
        });
        let y: Array1<f64> = reacted.iter().map(|&r| r as f64).collect();
        let mut beta = Array1::<f64>::zeros(k + 1);
        let rate = positives as f64 / n as f64;
        beta[k] = (rate / (1.0 - rate)).ln();
        for _ in 0..MAX_ITERS {
            let p = x.dot(&beta).mapv(sigmoid);
            let mut grad = x.t().dot(&(&p - &y));
            let wts = p.mapv(|v| (v * (1.0 - v)).max(1e-10));
            let mut hess = x.t().dot(&(&x * &wts.view().insert_axis(ndarray::Axis(1))));
            for j in 0..k {
                grad[j] += l2 * beta[j];
                hess[[j, j]] += l2;
            }
            hess[[k, k]] += 1e-9;
            let step = cholesky_solve(&hess, &grad)
                .ok_or_else(|| Error::InvalidData("propensity fit is singular".into()))?;
            // Damped Newton: halve the step until the penalised log-likelihood does not get
            // worse (plain Newton can overshoot on separable or badly scaled data).
            let objective = |b: &Array1<f64>| {
                let z = x.dot(b);
                let nll: f64 = z
                    .iter()
                    .zip(&y)
                    .map(|(&z, &y)| crate::math::softplus(z) - y * z)
                    .sum();
                nll + 0.5 * l2 * b.iter().take(k).map(|v| v * v).sum::<f64>()
            };
            let current = objective(&beta);
            let mut scale = 1.0;
            let mut next = &beta - &step;
            while objective(&next) > current + 1e-12 && scale > 1e-6 {
                scale *= 0.5;
                next = &beta - &(&step * scale);
            }
            beta = next;
            if step.iter().map(|s| s.abs()).fold(0.0, f64::max) < 1e-10 {
                break;
            }
        }
        Ok(PropensityModel {
            mean,
            scale,
            coef: beta.to_vec(),
        })
    }

    pub fn num_features(&self) -> usize {
        self.mean.len()
    }

    /// `π̂` for each row, in (0, 1). Clipping is the objective's job.
    pub fn predict(&self, features: ArrayView2<f32>) -> Result<Vec<f32>> {
        check::len(
            "exposure feature count",
            self.num_features(),
            features.ncols(),
        )?;
        check::finite_iter("exposure features", features.iter())?;
        let k = self.num_features();
        Ok(features
            .rows()
            .into_iter()
            .map(|row| {
                let logit = self.coef[k]
                    + row
                        .iter()
                        .enumerate()
                        .map(|(j, &v)| self.coef[j] * (v as f64 - self.mean[j]) / self.scale[j])
                        .sum::<f64>();
                // Never exactly 0 in f32: a propensity of 0 is not a valid weight.
                (sigmoid(logit) as f32).clamp(1e-6, 1.0)
            })
            .collect())
    }
}

/// Solves `A x = b` for symmetric positive-definite `A`; `None` if `A` is not.
fn cholesky_solve(a: &Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let n = b.len();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let d = a[[i, i]] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[[i, i]] = d.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - s) / l[[j, j]];
            }
        }
    }
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[[i, k]] * y[k]).sum::<f64>()) / l[[i, i]];
    }
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[[k, i]] * x[k]).sum::<f64>()) / l[[i, i]];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn recovers_a_known_logistic_propensity_and_is_calibrated() {
        let mut r = Rng::new(11);
        let n = 20_000;
        let feats = Array2::from_shape_fn((n, 3), |_| r.normal() as f32);
        let truth: Vec<f64> = feats
            .rows()
            .into_iter()
            .map(|x| sigmoid(-1.0 + 1.5 * x[0] as f64 - 0.7 * x[2] as f64))
            .collect();
        let reacted: Vec<f32> = truth.iter().map(|&p| r.bernoulli(p) as u8 as f32).collect();
        let model = PropensityModel::fit(feats.view(), &reacted, 1e-3).unwrap();
        let pred = model.predict(feats.view()).unwrap();
        let mae = pred
            .iter()
            .zip(&truth)
            .map(|(&p, &t)| (p as f64 - t).abs())
            .sum::<f64>()
            / n as f64;
        assert!(mae < 0.02, "mean abs error {mae}");
        let mean_pred = pred.iter().map(|&p| p as f64).sum::<f64>() / n as f64;
        let rate = reacted.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!(
            (mean_pred - rate).abs() < 1e-6,
            "calibration in the large: {mean_pred} vs {rate}"
        );
    }

    #[test]
    fn rejects_degenerate_input() {
        let feats = Array2::<f32>::zeros((4, 2));
        assert!(PropensityModel::fit(feats.view(), &[1.0; 4], 0.1).is_err());
        assert!(PropensityModel::fit(feats.view(), &[1.0, 0.0], 0.1).is_err());
        assert!(PropensityModel::fit(Array2::<f32>::zeros((0, 2)).view(), &[], 0.1).is_err());
        let model = PropensityModel::fit(feats.view(), &[1.0, 0.0, 0.0, 1.0], 0.1).unwrap();
        assert!(model.predict(Array2::<f32>::zeros((1, 3)).view()).is_err());
    }
}
