//! The CPU reference backend: forward and analytic backward of the MLP head with ndarray,
//! and the training engine built on them (`engine.rs`).

mod engine;

pub use engine::full_loss;
pub(crate) use engine::CpuEngine;

use std::borrow::Cow;
use tacit_gemm as gemm;

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{check, Result};
use crate::head::{Activation, Head, Linear};

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
    check::finite_array("embeddings", x)
}

/// A layer's bias as one slice.
fn bias(layer: &Linear) -> Cow<'_, [f32]> {
    match layer.bias.as_slice() {
        Some(b) => Cow::Borrowed(b),
        None => Cow::Owned(layer.bias.to_vec()),
    }
}

/// `input · Wᵀ + b` of layer `l`, then `act` if given: through the register-blocked kernels
/// (`gemm/`, the `tacit-gemm` crate) when `kernel`, else ndarray's `dot`.
fn affine_with(
    kernel: bool,
    head: &Head,
    l: usize,
    input: &ArrayView2<f32>,
    act: Option<Activation>,
) -> Array2<f32> {
    let layer = &head.layers[l];
    if kernel {
        return gemm::linear(
            input.view(),
            layer.weight.view(),
            &bias(layer),
            act.map(kernel_activation),
        );
    }
    let mut out = input.dot(&layer.weight.t());
    out += &layer.bias;
    if let Some(act) = act {
        activate(act, &mut out);
    }
    out
}

/// The head's activation as the kernels' epilogue applies it.
fn kernel_activation(act: Activation) -> gemm::Activation {
    match act {
        Activation::Relu => gemm::Activation::Relu,
        Activation::Tanh => gemm::Activation::Tanh,
    }
}

/// `a · b` through the kernels when `kernel`, else ndarray's `dot`.
fn matmul_with(kernel: bool, a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    if kernel {
        gemm::matmul(a, b)
    } else {
        a.dot(&b)
    }
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
    let act = Some(head.config.activation);
    let mut h = affine_with(gemm::ENABLED, head, 0, &x, act);
    for l in 1..last {
        h = affine_with(gemm::ENABLED, head, l, &h.view(), act);
    }
    Ok(h)
}

pub(crate) fn forward_unchecked(head: &Head, x: ArrayView2<f32>) -> Array2<f32> {
    forward_with(gemm::ENABLED, head, x)
}

/// Rows per pass of the kernels' forward: every layer runs on one block of rows before the
/// next block starts, so that the hidden activations stay in cache (256 × 128 f32 are
/// 128 KiB) instead of going through memory once per layer.
const FORWARD_ROWS: usize = 256;

/// The forward pass, the hidden layers' activations fused into their products.
fn forward_with(kernel: bool, head: &Head, x: ArrayView2<f32>) -> Array2<f32> {
    let last = head.layers.len() - 1;
    let act = |l: usize| (l < last).then_some(head.config.activation);
    if kernel {
        // Each layer's weight packed once for the whole call.
        let weights: Vec<_> = head
            .layers
            .iter()
            .map(|l| (gemm::Weight::new(l.weight.view()), bias(l)))
            .collect();
        let mut out = Array2::zeros((x.nrows(), head.config.outputs));
        for (rows, mut dst) in x
            .axis_chunks_iter(Axis(0), FORWARD_ROWS)
            .zip(out.axis_chunks_iter_mut(Axis(0), FORWARD_ROWS))
        {
            let (w, b) = &weights[0];
            let mut h = w.linear(rows, b, act(0).map(kernel_activation));
            for (l, (w, b)) in weights.iter().enumerate().skip(1) {
                h = w.linear(h.view(), b, act(l).map(kernel_activation));
            }
            dst.assign(&h);
        }
        return out;
    }
    let mut h = affine_with(kernel, head, 0, &x, act(0));
    for l in 1..=last {
        h = affine_with(kernel, head, l, &h.view(), act(l));
    }
    h
}

/// Forward pass that keeps what [`backward`] needs.
pub fn forward_train(head: &Head, x: ArrayView2<f32>) -> (Array2<f32>, ForwardCache) {
    forward_train_with(gemm::ENABLED, head, x)
}

fn forward_train_with(
    kernel: bool,
    head: &Head,
    x: ArrayView2<f32>,
) -> (Array2<f32>, ForwardCache) {
    let last = head.layers.len() - 1;
    let mut inputs = Vec::with_capacity(head.layers.len());
    let mut pre_activations = Vec::with_capacity(last);
    let mut h = x.to_owned();
    for l in 0..=last {
        let a = affine_with(kernel, head, l, &h.view(), None);
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
    backward_with(gemm::ENABLED, head, cache, d_out)
}

fn backward_with(kernel: bool, head: &Head, cache: &ForwardCache, d_out: ArrayView2<f32>) -> Head {
    let mut grads = head.zeros_like();
    let mut delta = d_out.to_owned();
    for l in (0..head.layers.len()).rev() {
        let input = &cache.inputs[l];
        grads.layers[l].weight = matmul_with(kernel, delta.t(), input.view());
        grads.layers[l].bias = delta.sum_axis(Axis(0));
        if l > 0 {
            let mut d_input = matmul_with(kernel, delta.view(), head.layers[l].weight.view());
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
    fn loss(kernel: bool, head: &Head, x: &Array2<f32>, c: &Array2<f32>) -> f64 {
        let out = forward_with(kernel, head, x.view());
        out.iter()
            .zip(c.iter())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    }

    #[test]
    fn backward_matches_finite_differences() {
        // Through ndarray's dot and through the register-blocked kernels (`gemm/`, the `tacit-gemm` crate).
        for kernel in [false, true] {
            backward_matches_finite_differences_with(kernel);
        }
    }

    fn backward_matches_finite_differences_with(kernel: bool) {
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
            let (_, cache) = forward_train_with(kernel, &head, x.view());
            let grads = backward_with(kernel, &head, &cache, c.view());
            let analytic: Vec<f32> = grads.tensors().iter().flat_map(|t| t.to_vec()).collect();
            let mut k = 0;
            let n_tensors = head.tensors().len();
            for t in 0..n_tensors {
                let len = head.tensors()[t].len();
                for i in 0..len {
                    let orig = head.tensors()[t][i];
                    let h = 1e-3f32;
                    head.tensors_mut()[t][i] = orig + h;
                    let up = loss(kernel, &head, &x, &c);
                    head.tensors_mut()[t][i] = orig - h;
                    let down = loss(kernel, &head, &x, &c);
                    head.tensors_mut()[t][i] = orig;
                    let fd = (up - down) / (2.0 * h as f64);
                    let an = analytic[k] as f64;
                    // ReLU kinks make a rare FD straddle a corner; the tolerance still catches
                    // any wrong transpose, missing activation derivative or misplaced bias.
                    assert!(
                        (fd - an).abs() <= 2e-2 * (1.0 + fd.abs()),
                        "{cfg:?} (kernel {kernel}) tensor {t} index {i}: fd {fd} analytic {an}"
                    );
                    k += 1;
                }
            }
        }
    }

    /// The forward outputs and every gradient of `head` on `x` with `dL/dout = c`, in
    /// float64 by plain loops: independent of ndarray's products and of the kernels.
    fn reference(head: &Head, x: &Array2<f32>, c: &Array2<f32>) -> (Vec<f64>, Vec<Vec<f64>>) {
        let act = head.config.activation;
        let last = head.layers.len() - 1;
        let n = x.nrows();
        let mut h: Vec<Vec<f64>> = x
            .rows()
            .into_iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        let (mut inputs, mut pres) = (vec![], vec![]);
        for (l, layer) in head.layers.iter().enumerate() {
            let a: Vec<Vec<f64>> = h
                .iter()
                .map(|row| {
                    (0..layer.weight.nrows())
                        .map(|j| {
                            layer.bias[j] as f64
                                + row
                                    .iter()
                                    .zip(layer.weight.row(j))
                                    .map(|(&v, &w)| v * w as f64)
                                    .sum::<f64>()
                        })
                        .collect()
                })
                .collect();
            inputs.push(h);
            h = if l == last {
                a.clone()
            } else {
                a.iter()
                    .map(|r| {
                        r.iter()
                            .map(|&v| match act {
                                Activation::Relu => v.max(0.0),
                                Activation::Tanh => v.tanh(),
                            })
                            .collect()
                    })
                    .collect()
            };
            pres.push(a);
        }
        let out: Vec<f64> = h.iter().flatten().copied().collect();
        let mut grads = vec![vec![]; 2 * head.layers.len()];
        let mut delta: Vec<Vec<f64>> = c
            .rows()
            .into_iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        for l in (0..head.layers.len()).rev() {
            let (o, i) = head.layers[l].weight.dim();
            let mut gw = vec![0.0; o * i];
            let mut gb = vec![0.0; o];
            for r in 0..n {
                for j in 0..o {
                    gb[j] += delta[r][j];
                    for k in 0..i {
                        gw[j * i + k] += delta[r][j] * inputs[l][r][k];
                    }
                }
            }
            grads[2 * l] = gw;
            grads[2 * l + 1] = gb;
            if l > 0 {
                delta = (0..n)
                    .map(|r| {
                        (0..i)
                            .map(|k| {
                                let d: f64 = (0..o)
                                    .map(|j| delta[r][j] * head.layers[l].weight[[j, k]] as f64)
                                    .sum();
                                let a = pres[l - 1][r][k];
                                match act {
                                    Activation::Relu => {
                                        if a <= 0.0 {
                                            0.0
                                        } else {
                                            d
                                        }
                                    }
                                    Activation::Tanh => d * (1.0 - a.tanh().powi(2)),
                                }
                            })
                            .collect()
                    })
                    .collect();
            }
        }
        (out, grads)
    }

    #[test]
    fn kernels_match_the_f64_reference_forward_and_backward() {
        // The head's own shape and awkward ones: rows not a multiple of the 4-row block
        // (and 1, and 0), odd widths, a two-output head, two hidden layers.
        for (n, dim, hidden, act, outputs) in [
            (13, 384, vec![128], Activation::Relu, 1),
            (1, 384, vec![128], Activation::Relu, 1),
            (0, 384, vec![128], Activation::Relu, 1),
            (7, 31, vec![9], Activation::Tanh, 2),
            (70, 17, vec![13, 5], Activation::Relu, 1),
            (5, 3, vec![], Activation::Relu, 1),
            // More rows than one block of the kernels' forward (`FORWARD_ROWS`).
            (600, 11, vec![6], Activation::Tanh, 1),
        ] {
            let cfg = HeadConfig {
                dim,
                hidden,
                activation: act,
                outputs,
            };
            let head = Head::init(&cfg, 9).unwrap();
            let x = random(n, dim, 10);
            let c = random(n, outputs, 11);
            let (want_out, want_grads) = reference(&head, &x, &c);
            for kernel in [false, true] {
                let what = format!("{cfg:?} n={n} kernel={kernel}");
                let out = forward_with(kernel, &head, x.view());
                let (out_train, cache) = forward_train_with(kernel, &head, x.view());
                assert_eq!(out, out_train, "{what}: forward and forward_train");
                for (g, w) in out.iter().zip(&want_out) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{what}: output {g} vs {w}"
                    );
                }
                let grads = backward_with(kernel, &head, &cache, c.view());
                for (t, (g, w)) in grads.tensors().iter().zip(&want_grads).enumerate() {
                    let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let err = g
                        .iter()
                        .zip(w)
                        .map(|(&a, b)| (a as f64 - b).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    assert!(
                        err <= 1e-5 * (1.0 + norm),
                        "{what}: tensor {t}: ‖Δ‖ {err} vs ‖ref‖ {norm}"
                    );
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
