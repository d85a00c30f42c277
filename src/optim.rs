//! AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient.

use serde::{Deserialize, Serialize};

use crate::error::{check, Result};
use crate::head::Head;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled decay, applied to weight matrices only: decaying biases would pull every
    /// score toward 0.5 for no regularisation benefit.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }
}

impl AdamWConfig {
    pub fn validate(&self) -> Result<()> {
        check::in_range("lr", self.lr, 1e-8, 10.0)?;
        check::in_range("beta1", self.beta1, 0.0, 0.9999)?;
        check::in_range("beta2", self.beta2, 0.0, 0.999999)?;
        check::in_range("eps", self.eps, 1e-12, 1.0)?;
        check::in_range("weight_decay", self.weight_decay, 0.0, 1.0)
    }
}

/// Optimizer state for one head: first and second moments of the same shape.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    step: u64,
    m: Head,
    v: Head,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &Head) -> Self {
        AdamW {
            config,
            step: 0,
            m: params.zeros_like(),
            v: params.zeros_like(),
        }
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    pub fn step(&mut self, params: &mut Head, grads: &Head) {
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let n_tensors = params.layers.len() * 2;
        let mut p_all = params.tensors_mut();
        let mut m_all = self.m.tensors_mut();
        let mut v_all = self.v.tensors_mut();
        let g_all = grads.tensors();
        for k in 0..n_tensors {
            let is_weight = k % 2 == 0;
            let (p, m, v, g) = (&mut p_all[k], &mut m_all[k], &mut v_all[k], g_all[k]);
            for i in 0..p.len() {
                let gi = g[i] as f64;
                let mi = c.beta1 * m[i] as f64 + (1.0 - c.beta1) * gi;
                let vi = c.beta2 * v[i] as f64 + (1.0 - c.beta2) * gi * gi;
                m[i] = mi as f32;
                v[i] = vi as f32;
                let mut pi = p[i] as f64;
                if is_weight {
                    pi -= c.lr * c.weight_decay * pi;
                }
                pi -= c.lr * (mi / bc1) / ((vi / bc2).sqrt() + c.eps);
                p[i] = pi as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::HeadConfig;

    #[test]
    fn first_step_moves_each_parameter_by_lr_against_the_gradient_sign() {
        let mut head = Head::init(&HeadConfig::new(3, &[]), 1).unwrap();
        let before = head.clone();
        let mut grads = head.zeros_like();
        grads.layers[0].weight.fill(0.5);
        grads.layers[0].bias.fill(-2.0);
        let cfg = AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        };
        AdamW::new(cfg, &head).step(&mut head, &grads);
        for (a, b) in head.layers[0]
            .weight
            .iter()
            .zip(before.layers[0].weight.iter())
        {
            assert!((a - (b - 0.01)).abs() < 1e-6);
        }
        assert!((head.layers[0].bias[0] - 0.01).abs() < 1e-6);
    }
}
