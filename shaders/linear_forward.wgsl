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
// Bindings 1 (steps) and 2 (state): the step table, shaders/step_table.wgsl.
@group(0) @binding(3) var<storage, read> input: array<f32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;
@group(0) @binding(6) var<storage, read_write> post: array<f32>;

// Each invocation computes up to 4 consecutive outputs of one row, so that it reads each input
// value once for all four (a software adapter runs invocations on the CPU, where loads cost).
// Every output's sum runs in the same order as one output per invocation would (bias, then i =
// 0, 1, …) as with one output per invocation.
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = flat_index(gid, groups);
    let rows = current_step().y;
    let quads = (params.out_dim + 3u) / 4u;
    if (index >= rows * quads) {
        return;
    }
    let r = index / quads;
    let o0 = (index % quads) * 4u;
    let count = min(4u, params.out_dim - o0);
    // Outputs past the layer's end repeat its last one; they are computed and not written.
    let last = params.out_dim - 1u;
    let o = vec4<u32>(o0, min(o0 + 1u, last), min(o0 + 2u, last), min(o0 + 3u, last));
    var acc = vec4<f32>(
        weights[params.b_offset + o.x],
        weights[params.b_offset + o.y],
        weights[params.b_offset + o.z],
        weights[params.b_offset + o.w],
    );
    let x0 = r * params.in_dim;
    let w = vec4<u32>(params.w_offset) + o * params.in_dim;
    for (var i = 0u; i < params.in_dim; i = i + 1u) {
        let xi = input[x0 + i];
        acc = acc + xi * vec4<f32>(weights[w.x + i], weights[w.y + i], weights[w.z + i], weights[w.w + i]);
    }
    for (var k = 0u; k < count; k = k + 1u) {
        let at = params.out_offset + r * params.out_dim + o0 + k;
        let a = acc[k];
        pre[at] = a;
        var y = a;
        if (params.activation == 1u) {
            y = max(a, 0.0);
        } else if (params.activation == 2u) {
            y = tanh(a);
        }
        post[at] = y;
    }
}
