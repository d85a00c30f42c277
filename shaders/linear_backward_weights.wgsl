// Parameter gradients of a linear layer over the batch:
// dW[o, i] = Σᵣ delta[r, o]·input[r, i] and db[o] = Σᵣ delta[r, o] (column i = in_dim).

struct Params {
    in_dim: u32,
    out_dim: u32,
    w_offset: u32,
    b_offset: u32,
    delta_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Bindings 1 (steps) and 2 (state): the step table, shaders/step_table.wgsl.
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read> input: array<f32>;
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;

// Each invocation computes a register tile of up to 4 outputs × 4 columns of the gradient
// (column in_dim is the bias, whose input is 1), so that per batch row it loads 4 deltas and 4
// inputs for 16 products instead of 2 loads per product. Every entry's sum still runs over
// r = 0, 1, … in order from 0, as with one entry per invocation; the bias adds delta·1.0, which
// is delta exactly.
@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = flat_index(gid, groups);
    let cols = params.in_dim + 1u;
    let col_quads = (cols + 3u) / 4u;
    let out_quads = (params.out_dim + 3u) / 4u;
    if (index >= out_quads * col_quads) {
        return;
    }
    let o0 = (index / col_quads) * 4u;
    let c0 = (index % col_quads) * 4u;
    // Outputs and columns past the edge repeat the last one (`tile_indices`, shaders/tile.wgsl).
    let last_o = params.out_dim - 1u;
    let o = tile_indices(o0, last_o);
    let c = tile_indices(c0, params.in_dim);
    let is_bias = c == vec4<u32>(params.in_dim);
    // The bias column reads a real input (the last) and replaces it with 1.
    let ci = min(c, vec4<u32>(params.in_dim - 1u));
    let rows = current_step().y;
    // acc[k] holds output o0 + k's four columns.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var r = 0u; r < rows; r = r + 1u) {
        let d = params.delta_offset + r * params.out_dim;
        let x0 = r * params.in_dim;
        let x = select(
            vec4<f32>(input[x0 + ci.x], input[x0 + ci.y], input[x0 + ci.z], input[x0 + ci.w]),
            vec4<f32>(1.0),
            is_bias,
        );
        acc0 = acc0 + delta[d + o.x] * x;
        acc1 = acc1 + delta[d + o.y] * x;
        acc2 = acc2 + delta[d + o.z] * x;
        acc3 = acc3 + delta[d + o.w] * x;
    }
    let out_count = min(4u, params.out_dim - o0);
    let col_count = min(4u, cols - c0);
    for (var k = 0u; k < out_count; k = k + 1u) {
        let a = tile_row(acc0, acc1, acc2, acc3, k);
        let ok = o0 + k;
        for (var j = 0u; j < col_count; j = j + 1u) {
            let cj = c0 + j;
            if (cj == params.in_dim) {
                grads[params.b_offset + ok] = a[j];
            } else {
                grads[params.w_offset + ok * params.in_dim + cj] = a[j];
            }
        }
    }
}
