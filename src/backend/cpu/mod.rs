//! The CPU reference backend: forward and analytic backward of the MLP head with ndarray,
//! and the training engine built on them (`engine.rs`).

mod engine;

pub use engine::full_loss;
pub(crate) use engine::CpuEngine;

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{check, Result};
use crate::head::{Activation, Head};

/// What the backward pass needs from the forward pass: the input of every layer and the
/// pre-activations of the hidden layers.
#[derive(Debug)]
pub struct ForwardCache {
    inputs: Vec<Array2<f32>>,
    pre_activations: Vec<Array2<f32>>,
}

fn activate(act: Activation, x: &mut Array2<f32>) {
    match act {
        Activation::Relu => x.mapv_inplace(|v| v.max(0.0)),
        Activation::Tanh => x.mapv_inplace(f32::tanh),
    }
}

/// `dL/da = dL/dh ⊙ act'(a)`, written into `grad`.
fn activation_backward(act: Activation, pre: &Array2<f32>, grad: &mut Array2<f32>) {
    match act {
        Activation::Relu => grad.zip_mut_with(pre, |g, &a| {
            if a <= 0.0 {
                *g = 0.0
            }
        }),
        Activation::Tanh => grad.zip_mut_with(pre, |g, &a| {
            let t = a.tanh();
            *g *= 1.0 - t * t
        }),
    }
}

/// Checks that `x` is `[n, dim]` with finite values.
pub fn validate_input(head: &Head, x: ArrayView2<f32>) -> Result<()> {
    check::len("embedding width", head.config.dim, x.ncols())?;
    check::finite_iter("embeddings", x.iter())
}

fn affine(head: &Head, l: usize, input: &ArrayView2<f32>) -> Array2<f32> {
    let layer = &head.layers[l];
    let mut out = input.dot(&layer.weight.t());
    out += &layer.bias;
    out
}

/// Outputs `[n, outputs]` for inputs `[n, dim]`.
pub fn forward(head: &Head, x: ArrayView2<f32>) -> Result<Array2<f32>> {
    validate_input(head, x)?;
    Ok(forward_unchecked(head, x))
}

/// Scores (first output logit) of every row of `x`.
pub fn score(head: &Head, x: ArrayView2<f32>) -> Result<Vec<f32>> {
    Ok(forward(head, x)?.column(0).to_vec())
}

/// The activations of the last hidden layer of `head` for `x` (`[n, hidden.last()]`): the
/// features a `basis` personal part reads. Refused for a linear head.
pub fn last_hidden(head: &Head, x: ArrayView2<f32>) -> Result<Array2<f32>> {
    validate_input(head, x)?;
    let last = head.layers.len() - 1;
    if last == 0 {
        return Err(crate::error::Error::InvalidConfig(
            "a linear head has no hidden layer".into(),
        ));
    }
    let mut h = affine(head, 0, &x);
    activate(head.config.activation, &mut h);
    for l in 1..last {
        h = affine(head, l, &h.view());
        activate(head.config.activation, &mut h);
    }
    Ok(h)
}

pub(crate) fn forward_unchecked(head: &Head, x: ArrayView2<f32>) -> Array2<f32> {
    let last = head.layers.len() - 1;
    let mut h = affine(head, 0, &x);
    for l in 1..=last {
        activate(head.config.activation, &mut h);
        h = affine(head, l, &h.view());
    }
    h
}

/// Forward pass that keeps what [`backward`] needs.
pub fn forward_train(head: &Head, x: ArrayView2<f32>) -> (Array2<f32>, ForwardCache) {
    let last = head.layers.len() - 1;
    let mut inputs = Vec::with_capacity(head.layers.len());
    let mut pre_activations = Vec::with_capacity(last);
    let mut h = x.to_owned();
    for l in 0..=last {
        let a = affine(head, l, &h.view());
        inputs.push(h);
        if l == last {
            h = a;
        } else {
            let mut next = a.clone();
            activate(head.config.activation, &mut next);
            pre_activations.push(a);
            h = next;
        }
    }
    (
        h,
        ForwardCache {
            inputs,
            pre_activations,
        },
    )
}

/// Gradients of the loss with respect to every parameter, given `dL/d(outputs)`.
/// Returned as a [`Head`] of the same shape.
pub fn backward(head: &Head, cache: &ForwardCache, d_out: ArrayView2<f32>) -> Head {
    let mut grads = head.zeros_like();
    let mut delta = d_out.to_owned();
    for l in (0..head.layers.len()).rev() {
        let input = &cache.inputs[l];
        grads.layers[l].weight = delta.t().dot(input);
        grads.layers[l].bias = delta.sum_axis(Axis(0));
        if l > 0 {
            let mut d_input = delta.dot(&head.layers[l].weight);
            activation_backward(
                head.config.activation,
                &cache.pre_activations[l - 1],
                &mut d_input,
            );
            delta = d_input;
        }
    }
    grads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::HeadConfig;
    use crate::rng::Rng;

    fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut r = Rng::new(seed);
        Array2::from_shape_fn((n, d), |_| r.normal() as f32)
    }

    /// Loss L = Σ c ⊙ out with fixed random c, so dL/dout = c.
    fn loss(head: &Head, x: &Array2<f32>, c: &Array2<f32>) -> f64 {
        let out = forward_unchecked(head, x.view());
        out.iter()
            .zip(c.iter())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (hidden, act, outputs) in [
            (vec![], Activation::Relu, 1),
            (vec![6], Activation::Tanh, 1),
            (vec![7, 4], Activation::Tanh, 2),
            (vec![5], Activation::Relu, 2),
        ] {
            let cfg = HeadConfig {
                dim: 5,
                hidden,
                activation: act,
                outputs,
            };
            let mut head = Head::init(&cfg, 3).unwrap();
            let x = random(9, 5, 4);
            let c = random(9, outputs, 5);
            let (_, cache) = forward_train(&head, x.view());
            let grads = backward(&head, &cache, c.view());
            let analytic: Vec<f32> = grads.tensors().iter().flat_map(|t| t.to_vec()).collect();
            let mut k = 0;
            let n_tensors = head.tensors().len();
            for t in 0..n_tensors {
                let len = head.tensors()[t].len();
                for i in 0..len {
                    let orig = head.tensors()[t][i];
                    let h = 1e-3f32;
                    head.tensors_mut()[t][i] = orig + h;
                    let up = loss(&head, &x, &c);
                    head.tensors_mut()[t][i] = orig - h;
                    let down = loss(&head, &x, &c);
                    head.tensors_mut()[t][i] = orig;
                    let fd = (up - down) / (2.0 * h as f64);
                    let an = analytic[k] as f64;
                    // ReLU kinks make a rare FD straddle a corner; the tolerance still catches
                    // any wrong transpose, missing activation derivative or misplaced bias.
                    assert!(
                        (fd - an).abs() <= 2e-2 * (1.0 + fd.abs()),
                        "{cfg:?} tensor {t} index {i}: fd {fd} analytic {an}"
                    );
                    k += 1;
                }
            }
        }
    }

    #[test]
    fn forward_rejects_bad_input() {
        let head = Head::init(&HeadConfig::new(4, &[3]), 1).unwrap();
        let wrong = Array2::<f32>::zeros((2, 5));
        assert_eq!(
            forward(&head, wrong.view()).unwrap_err().code().as_str(),
            "dim_mismatch"
        );
        let mut nan = Array2::<f32>::zeros((2, 4));
        nan[[1, 2]] = f32::NAN;
        assert_eq!(
            forward(&head, nan.view()).unwrap_err().code().as_str(),
            "non_finite_input"
        );
        let empty = Array2::<f32>::zeros((0, 4));
        assert_eq!(forward(&head, empty.view()).unwrap().nrows(), 0);
    }
}
