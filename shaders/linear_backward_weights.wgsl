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

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = flat_index(gid, groups);
    let cols = params.in_dim + 1u;
    if (index >= params.out_dim * cols) {
        return;
    }
    let o = index / cols;
    let i = index % cols;
    let rows = current_step().y;
    var acc = 0.0;
    if (i == params.in_dim) {
        for (var r = 0u; r < rows; r = r + 1u) {
            acc = acc + delta[params.delta_offset + r * params.out_dim + o];
        }
        grads[params.b_offset + o] = acc;
    } else {
        for (var r = 0u; r < rows; r = r + 1u) {
            acc = acc + delta[params.delta_offset + r * params.out_dim + o] * input[r * params.in_dim + i];
        }
        grads[params.w_offset + o * params.in_dim + i] = acc;
    }
}
