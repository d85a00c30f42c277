// Adds each batch row's fixed logit offset to its first head output, between the forward pass
// and the loss: outputs[r * stride] += offsets[rows[r]]. The offset is the other part of a
// two-part model (src/personal.rs), a constant of this part's loss, so backward ignores it.

struct Params {
    // Outputs per row of `outputs` (the head's output count).
    stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Bindings 1 (steps) and 2 (state): the step table, shaders/step_table.wgsl.
@group(0) @binding(3) var<storage, read> batch_rows: array<u32>;
// One offset per resident row (training rows, then validation rows).
@group(0) @binding(4) var<storage, read> offsets: array<f32>;
@group(0) @binding(5) var<storage, read_write> outputs: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_index(gid, groups);
    let step = current_step();
    if (r >= step.y) {
        return;
    }
    outputs[r * params.stride] = outputs[r * params.stride] + offsets[batch_rows[step.x + r]];
}
