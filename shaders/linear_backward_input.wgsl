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

// Each invocation computes a register tile of up to 4 rows × 4 consecutive inputs, so that per
// output o it loads 4 deltas and 4 weights for 16 products instead of 2 loads per product.
// Every entry's sum still runs over o = 0, 1, … in order from 0, as with one entry per
// invocation.
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = flat_index(gid, groups);
    let rows = current_step().y;
    let quads = (params.in_dim + 3u) / 4u;
    let blocks = (rows + 3u) / 4u;
    if (index >= blocks * quads) {
        return;
    }
    let r0 = (index / quads) * 4u;
    let i0 = (index % quads) * 4u;
    // Rows and inputs past the edge repeat the last one; they are computed and not written.
    let last_i = params.in_dim - 1u;
    let last_r = rows - 1u;
    let i = vec4<u32>(params.w_offset) + vec4<u32>(i0, min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
    let d = vec4<u32>(params.delta_offset) + vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r)) * params.out_dim;
    // acc[k] holds row r0 + k's four inputs.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var o = 0u; o < params.out_dim; o = o + 1u) {
        let w = o * params.in_dim;
        let wo = vec4<f32>(weights[i.x + w], weights[i.y + w], weights[i.z + w], weights[i.w + w]);
        acc0 = acc0 + delta[d.x + o] * wo;
        acc1 = acc1 + delta[d.y + o] * wo;
        acc2 = acc2 + delta[d.z + o] * wo;
        acc3 = acc3 + delta[d.w + o] * wo;
    }
    let row_count = min(4u, rows - r0);
    let count = min(4u, params.in_dim - i0);
    for (var k = 0u; k < row_count; k = k + 1u) {
        var a = acc0;
        if (k == 1u) {
            a = acc1;
        } else if (k == 2u) {
            a = acc2;
        } else if (k == 3u) {
            a = acc3;
        }
        let base = (r0 + k) * params.in_dim + i0;
        for (var j = 0u; j < count; j = j + 1u) {
            let at = base + j;
            var g = a[j];
            let p = pre_prev[at];
            if (params.activation == 1u) {
                if (p <= 0.0) {
                    g = 0.0;
                }
            } else if (params.activation == 2u) {
                let t = tanh(p);
                g = g * (1.0 - t * t);
            }
            d_in[at] = g;
        }
    }
}
