//! An independent float64 MLP: the reference the conformance suite checks every backend
//! against. Written from the definition (`h = act(W h + b)`, last layer linear), sharing no
//! code with the library's backends; the library's `Head` is only read for its weights.

use ndarray::{Array1, Array2};
use tacit_rm::head::{Activation, Head};

fn weights(head: &Head) -> Vec<(Array2<f64>, Array1<f64>)> {
    head.layers
        .iter()
        .map(|l| (l.weight.mapv(f64::from), l.bias.mapv(f64::from)))
        .collect()
}

fn act(a: Activation, v: f64) -> f64 {
    match a {
        Activation::Relu => v.max(0.0),
        Activation::Tanh => v.tanh(),
    }
}

fn act_grad(a: Activation, v: f64) -> f64 {
    match a {
        Activation::Relu => (v > 0.0) as u8 as f64,
        Activation::Tanh => 1.0 - v.tanh().powi(2),
    }
}

/// Every layer's input and pre-activation, for input rows `x`.
fn layers(head: &Head, x: &Array2<f32>) -> (Vec<Array2<f64>>, Vec<Array2<f64>>) {
    let mut h = x.mapv(f64::from);
    let (mut inputs, mut pre) = (Vec::new(), Vec::new());
    let w = weights(head);
    for (l, (weight, bias)) in w.iter().enumerate() {
        let a = h.dot(&weight.t()) + bias;
        inputs.push(h);
        h = if l + 1 == w.len() {
            a.clone()
        } else {
            a.mapv(|v| act(head.config.activation, v))
        };
        pre.push(a);
    }
    (inputs, pre)
}

/// Outputs `[n, outputs]` of `head` on rows `x`, in float64.
pub fn forward(head: &Head, x: &Array2<f32>) -> Array2<f64> {
    let (_, mut pre) = layers(head, x);
    pre.pop().expect("a head has a layer")
}

/// First-output scores of `head` on rows `x`, in float64.
pub fn scores(head: &Head, x: &Array2<f32>) -> Vec<f64> {
    forward(head, x).column(0).to_vec()
}

/// `dL/dθ` for every parameter in `Head::to_flat` order (per layer: weight row-major, then
/// bias), given `dL/d(outputs)`.
pub fn backward(head: &Head, x: &Array2<f32>, d_out: &Array2<f64>) -> Vec<f64> {
    let (inputs, pre) = layers(head, x);
    let w = weights(head);
    let mut per_layer = vec![Vec::new(); w.len()];
    let mut delta = d_out.clone();
    for l in (0..w.len()).rev() {
        let dw = delta.t().dot(&inputs[l]);
        let db = delta.sum_axis(ndarray::Axis(0));
        per_layer[l] = dw.iter().chain(db.iter()).copied().collect();
        if l > 0 {
            let mut d_in = delta.dot(&w[l].0);
            d_in.zip_mut_with(&pre[l - 1], |d, &a| {
                *d *= act_grad(head.config.activation, a)
            });
            delta = d_in;
        }
    }
    per_layer.concat()
}

/// The largest `|got − want|`, relative to the largest `|want|` (absolute below 1).
pub fn worst_error(got: impl IntoIterator<Item = f64>, want: &[f64]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    got.into_iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
        / scale
}
