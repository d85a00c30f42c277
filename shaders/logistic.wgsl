// Shared numerics of the loss kernels (prepended to them; mirrors src/math.rs and
// src/objective/bce.rs).

fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn log_sigmoid(x: f32) -> f32 {
    return -softplus(-x);
}

fn expm1(x: f32) -> f32 {
    if (abs(x) < 1e-3) {
        return x + 0.5 * x * x + x * x * x / 6.0;
    }
    return exp(x) - 1.0;
}

// log(1 − e^a) for a ≤ 0.
fn log1mexp(a: f32) -> f32 {
    if (a > -0.6931472) {
        return log(-expm1(a));
    }
    return log(1.0 - exp(a));
}

// Gradient of a clipped logit survives only where it points back inside.
fn mask_clipped(z: f32, limit: f32, g: f32) -> f32 {
    if ((z > limit && g < 0.0) || (z < -limit && g > 0.0)) {
        return 0.0;
    }
    return g;
}

// The non-negative correction of src/objective/nonneg.rs for partial risks p (positive
// class) and q (negative class): (loss, gradient scale of p, gradient scale of q).
fn nonneg_correct(p: f32, q: f32) -> vec3<f32> {
    if (params.nonneg != 1u) {
        return vec3<f32>(p + q, 1.0, 1.0);
    }
    return vec3<f32>(max(p, 0.0) + max(q, 0.0), select(1.0, 0.0, p < 0.0), select(1.0, 0.0, q < 0.0));
}

struct LossParams {
    // 0 = training step (write gradients, add to the epoch sums), 1 = evaluation (loss only).
    mode: u32,
    nonneg: u32,
    logit_clip: f32,
    // loss_bce: 1 = SNIPS normalisation.
    variant: u32,
    beta_lambda: f32,
    beta_alpha0: f32,
    beta_beta0: f32,
    beta_tau_min: f32,
    // Where the exposure logits (and their gradients) start in `outputs` (`d_out`).
    aux_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: LossParams;
// Bindings 1 (steps) and 2 (state): the step table, shaders/step_table.wgsl.
@group(0) @binding(3) var<storage, read> batch_rows: array<u32>;
// Per example: (w, t, m/π̂, observed).
@group(0) @binding(4) var<storage, read> row_data: array<vec4<f32>>;
// Head outputs [rows, outputs], then the exposure logits from `aux_offset` (implicit).
@group(0) @binding(5) var<storage, read> outputs: array<f32>;
// Per pair: (winner position, loser position, bitcast weight, unused).
@group(0) @binding(6) var<storage, read> pairs: array<vec4<u32>>;
// Gradients, laid out as `outputs`.
@group(0) @binding(7) var<storage, read_write> d_out: array<f32>;
// [0] Σ batch loss × weight, [1] Σ weight (training); [2] evaluation loss.
@group(0) @binding(8) var<storage, read_write> loss_acc: array<f32>;

var<workgroup> red0: array<f32, WORKGROUP_SIZE>;
var<workgroup> red1: array<f32, WORKGROUP_SIZE>;
var<workgroup> red2: array<f32, WORKGROUP_SIZE>;

// Tree reduction of red0..red2 into element 0 (called by every invocation of the workgroup).
fn reduce3(lid: u32) {
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red0[lid] = red0[lid] + red0[lid + s];
            red1[lid] = red1[lid] + red1[lid + s];
            red2[lid] = red2[lid] + red2[lid + s];
        }
        workgroupBarrier();
    }
}

// Records the batch loss: training adds it (weighted) to the epoch sums, evaluation stores it.
fn record_loss(lid: u32, loss: f32, weight: f32) {
    if (lid == 0u) {
        if (params.mode == 0u) {
            loss_acc[0] = loss_acc[0] + loss * weight;
            loss_acc[1] = loss_acc[1] + weight;
        } else {
            loss_acc[2] = loss;
        }
    }
}
