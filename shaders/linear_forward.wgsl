// Fused linear + bias + activation: pre[r, o] = bias[o] + Σᵢ input[r, i]·W[o, i];
// post = act(pre). activation: 0 = identity, 1 = ReLU, 2 = tanh.

struct Params {
    in_dim: u32,
    out_dim: u32,
    activation: u32,
    w_offset: u32,
    b_offset: u32,
    // Where this layer's rows start in `pre` / `post` (the exposure head shares buffers).
    out_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> steps: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read> input: array<f32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;
@group(0) @binding(6) var<storage, read_write> post: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = gid.x + gid.y * groups.x * 256u;
    let rows = steps[state[0]].y;
    if (index >= rows * params.out_dim) {
        return;
    }
    let r = index / params.out_dim;
    let o = index % params.out_dim;
    var acc = weights[params.b_offset + o];
    let x0 = r * params.in_dim;
    let w0 = params.w_offset + o * params.in_dim;
    for (var i = 0u; i < params.in_dim; i = i + 1u) {
        acc = acc + input[x0 + i] * weights[w0 + i];
    }
    pre[params.out_offset + index] = acc;
    var y = acc;
    if (params.activation == 1u) {
        y = max(acc, 0.0);
    } else if (params.activation == 2u) {
        y = tanh(acc);
    }
    post[params.out_offset + index] = y;
}
