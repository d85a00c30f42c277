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

// Each invocation computes a register tile of up to 4 rows × 4 consecutive outputs, so that per
// input column it loads 4 inputs and 4 weights for 16 products (one output per invocation loads
// 2 per product; a software adapter runs invocations on the CPU, where loads are the cost).
// Every output's sum still runs in the order one output per invocation would use (bias, then
// i = 0, 1, …): the tile changes which invocation computes a sum, not its order.
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = flat_index(gid, groups);
    let rows = current_step().y;
    let quads = (params.out_dim + 3u) / 4u;
    let blocks = (rows + 3u) / 4u;
    if (index >= blocks * quads) {
        return;
    }
    // Neighbouring invocations share a row block and read the same inputs.
    let r0 = (index / quads) * 4u;
    let o0 = (index % quads) * 4u;
    // Rows and outputs past the edge repeat the last one (`tile_indices`, shaders/tile.wgsl).
    let last_o = params.out_dim - 1u;
    let last_r = rows - 1u;
    let o = tile_indices(o0, last_o);
    let x = tile_indices(r0, last_r) * params.in_dim;
    let w = vec4<u32>(params.w_offset) + o * params.in_dim;
    let bias = vec4<f32>(
        weights[params.b_offset + o.x],
        weights[params.b_offset + o.y],
        weights[params.b_offset + o.z],
        weights[params.b_offset + o.w],
    );
    // acc[k] holds row r0 + k's four outputs.
    var acc0 = bias;
    var acc1 = bias;
    var acc2 = bias;
    var acc3 = bias;
    for (var i = 0u; i < params.in_dim; i = i + 1u) {
        let wi = vec4<f32>(weights[w.x + i], weights[w.y + i], weights[w.z + i], weights[w.w + i]);
        acc0 = acc0 + input[x.x + i] * wi;
        acc1 = acc1 + input[x.y + i] * wi;
        acc2 = acc2 + input[x.z + i] * wi;
        acc3 = acc3 + input[x.w + i] * wi;
    }
    let row_count = min(4u, rows - r0);
    let count = min(4u, params.out_dim - o0);
    for (var k = 0u; k < row_count; k = k + 1u) {
        let a = tile_row(acc0, acc1, acc2, acc3, k);
        let base = params.out_offset + (r0 + k) * params.out_dim + o0;
        for (var j = 0u; j < count; j = j + 1u) {
            let v = a[j];
            pre[base + j] = v;
            var y = v;
            if (params.activation == 1u) {
                y = max(v, 0.0);
            } else if (params.activation == 2u) {
                y = tanh(v);
            }
            post[base + j] = y;
        }
    }
}
