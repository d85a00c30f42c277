// Input gradient of a linear layer through the previous layer's activation:
// d_in[r, i] = (Σₒ delta[r, o]·W[o, i]) · act'(pre_prev[r, i]).

struct Params {
    in_dim: u32,
    out_dim: u32,
    activation: u32,
    w_offset: u32,
    delta_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Bindings 1 (steps) and 2 (state): the step table, shaders/step_table.wgsl.
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<storage, read> pre_prev: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_in: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = flat_index(gid, groups);
    let rows = current_step().y;
    if (index >= rows * params.in_dim) {
        return;
    }
    let r = index / params.in_dim;
    let i = index % params.in_dim;
    var acc = 0.0;
    for (var o = 0u; o < params.out_dim; o = o + 1u) {
        acc = acc + delta[params.delta_offset + r * params.out_dim + o] * weights[params.w_offset + o * params.in_dim + i];
    }
    let a = pre_prev[index];
    if (params.activation == 1u) {
        if (a <= 0.0) {
            acc = 0.0;
        }
    } else if (params.activation == 2u) {
        let t = tanh(a);
        acc = acc * (1.0 - t * t);
    }
    d_in[index] = acc;
}
