//! The reward head: an MLP from a response embedding to one logit (or two, for the `beta`
//! objective's mean/confidence head). This file holds its configuration, parameters and
//! initialisation; the arithmetic lives in `backend::cpu` (and later the GPU backend).

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Non-linearity between hidden layers (the output layer is always linear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
}

impl Activation {
    pub const NAMES: [&'static str; 2] = ["relu", "tanh"];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "relu" => Ok(Activation::Relu),
            "tanh" => Ok(Activation::Tanh),
            other => Err(Error::unknown("activation", other, &Self::NAMES)),
        }
    }
}

/// Shape of a head. `hidden` may be empty (a linear head).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadConfig {
    pub dim: usize,
    #[serde(default)]
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub activation: Activation,
    /// Number of outputs: 1 for a reward logit, 2 for the Beta head (mean logit, confidence).
    #[serde(default = "one")]
    pub outputs: usize,
}

fn one() -> usize {
    1
}

/// Largest layer width accepted: far above any sensible reward head, and it keeps a
/// malicious metadata block from asking for gigabytes.
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest number of hidden layers accepted.
pub const MAX_HIDDEN_LAYERS: usize = 16;

impl HeadConfig {
    pub fn new(dim: usize, hidden: &[usize]) -> Self {
        HeadConfig {
            dim,
            hidden: hidden.to_vec(),
            activation: Activation::Relu,
            outputs: 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        // dim 0 is allowed: the implicit objective's exposure model may see no features and
        // then learns only a bias.
        if self.dim > MAX_WIDTH {
            return Err(Error::InvalidConfig(format!(
                "dim {} exceeds {MAX_WIDTH}",
                self.dim
            )));
        }
        if self.hidden.len() > MAX_HIDDEN_LAYERS {
            return Err(Error::InvalidConfig(format!(
                "{} hidden layers exceed {MAX_HIDDEN_LAYERS}",
                self.hidden.len()
            )));
        }
        if let Some(&w) = self.hidden.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return Err(Error::InvalidConfig(format!(
                "hidden width {w} outside 1..={MAX_WIDTH}"
            )));
        }
        if !(1..=2).contains(&self.outputs) {
            return Err(Error::InvalidConfig(format!(
                "outputs must be 1 or 2, got {}",
                self.outputs
            )));
        }
        Ok(())
    }

    /// `(in, out)` of every linear layer, input to output.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        let mut sizes = vec![self.dim];
        sizes.extend(&self.hidden);
        sizes.push(self.outputs);
        sizes.windows(2).map(|w| (w[0], w[1])).collect()
    }

    pub fn num_params(&self) -> usize {
        self.layer_shapes().iter().map(|(i, o)| i * o + o).sum()
    }
}

/// One affine layer, `y = x Wᵀ + b` with `weight` stored `[out, in]` (the PyTorch layout, so
/// exported safetensors read naturally elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub weight: Array2<f32>,
    pub bias: Array1<f32>,
}

/// A head's configuration and parameters. Also used for gradients and optimizer moments,
/// which have exactly the same shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub config: HeadConfig,
    pub layers: Vec<Linear>,
}

impl Head {
    /// Seeded initialisation: He-uniform for ReLU layers, Glorot-uniform for tanh, and a
    /// small output layer so that a fresh head scores every answer near 0.5.
    pub fn init(config: &HeadConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let shapes = config.layer_shapes();
        let last = shapes.len() - 1;
        let layers = shapes
            .iter()
            .enumerate()
            .map(|(l, &(fan_in, fan_out))| {
                let fan_in_f = fan_in.max(1) as f64;
                let bound = if l == last {
                    (1.0 / fan_in_f).sqrt()
                } else {
                    match config.activation {
                        Activation::Relu => (6.0 / fan_in_f).sqrt(),
                        Activation::Tanh => (6.0 / (fan_in_f + fan_out as f64)).sqrt(),
                    }
                };
                let weight = Array2::from_shape_fn((fan_out, fan_in), |_| {
                    ((rng.uniform() * 2.0 - 1.0) * bound) as f32
                });
                Linear {
                    weight,
                    bias: Array1::zeros(fan_out),
                }
            })
            .collect();
        Ok(Head {
            config: config.clone(),
            layers,
        })
    }

    /// A head of the same shape with every parameter zero (gradients, optimizer moments).
    pub fn zeros_like(&self) -> Self {
        Head {
            config: self.config.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| Linear {
                    weight: Array2::zeros(l.weight.raw_dim()),
                    bias: Array1::zeros(l.bias.len()),
                })
                .collect(),
        }
    }

    /// Every parameter tensor as a flat slice, in a fixed order (layer by layer, weight then
    /// bias). Optimizers and sync deltas walk parameters through this.
    pub fn tensors(&self) -> Vec<&[f32]> {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    l.weight
                        .as_slice()
                        .expect("weights are kept in standard layout"),
                    l.bias.as_slice().expect("biases are contiguous"),
                ]
            })
            .collect()
    }

    pub fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    l.weight
                        .as_slice_mut()
                        .expect("weights are kept in standard layout"),
                    l.bias.as_slice_mut().expect("biases are contiguous"),
                ]
            })
            .collect()
    }

    /// Names of the tensors in [`Head::tensors`] order, as stored in safetensors files.
    pub fn tensor_names(&self) -> Vec<String> {
        (0..self.layers.len())
            .flat_map(|i| [format!("layers.{i}.weight"), format!("layers.{i}.bias")])
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.config.num_params()
    }

    /// Every parameter in [`Head::tensors`] order, as one flat vector (the GPU's layout).
    pub fn to_flat(&self) -> Vec<f32> {
        self.tensors().concat()
    }

    /// Overwrites every parameter from a flat vector in [`Head::tensors`] order.
    pub fn load_flat(&mut self, flat: &[f32]) -> Result<()> {
        if flat.len() != self.num_params() {
            return Err(Error::DimMismatch {
                what: "flat parameters".into(),
                expected: self.num_params(),
                got: flat.len(),
            });
        }
        let mut at = 0;
        for t in self.tensors_mut() {
            t.copy_from_slice(&flat[at..at + t.len()]);
            at += t.len();
        }
        Ok(())
    }

    /// True when every parameter is finite.
    pub fn is_finite(&self) -> bool {
        self.tensors()
            .iter()
            .all(|t| t.iter().all(|v| v.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded_and_shaped() {
        let cfg = HeadConfig::new(8, &[5, 3]);
        let a = Head::init(&cfg, 1).unwrap();
        let b = Head::init(&cfg, 1).unwrap();
        let c = Head::init(&cfg, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(cfg.layer_shapes(), vec![(8, 5), (5, 3), (3, 1)]);
        assert_eq!(
            a.tensors().iter().map(|t| t.len()).sum::<usize>(),
            cfg.num_params()
        );
        assert_eq!(cfg.num_params(), 8 * 5 + 5 + 5 * 3 + 3 + 3 + 1);
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(HeadConfig::new(8, &[0]).validate().is_err());
        assert!(HeadConfig {
            outputs: 3,
            ..HeadConfig::new(8, &[])
        }
        .validate()
        .is_err());
        assert!(HeadConfig::new(MAX_WIDTH + 1, &[]).validate().is_err());
        assert!(Activation::parse("swish").is_err());
    }
}
