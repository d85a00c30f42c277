// AdamW over the flat parameter buffer. Decoupled decay applies where decay_mask = 1
// (weight matrices, not biases), as in src/optim.rs. The step count comes from state[1].

struct Params {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read> decay_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = flat_index(gid, groups);
    if (j >= params.count) {
        return;
    }
    let t = f32(state[1] + 1u);
    let g = grads[j];
    let mj = params.beta1 * m[j] + (1.0 - params.beta1) * g;
    let vj = params.beta2 * v[j] + (1.0 - params.beta2) * g * g;
    m[j] = mj;
    v[j] = vj;
    let bc1 = 1.0 - pow(params.beta1, t);
    let bc2 = 1.0 - pow(params.beta2, t);
    var p = weights[j];
    p = p - params.lr * params.weight_decay * decay_mask[j] * p;
    p = p - params.lr * (mj / bc1) / (sqrt(vj / bc2) + params.eps);
    weights[j] = p;
}
