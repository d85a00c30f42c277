// Copies the rows of the current batch out of a resident matrix: dest[r, :] = source[rows[r], :].

struct Params {
    width: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Bindings 1 (steps) and 2 (state): the step table, shaders/step_table.wgsl.
@group(0) @binding(3) var<storage, read> batch_rows: array<u32>;
@group(0) @binding(4) var<storage, read> source: array<f32>;
@group(0) @binding(5) var<storage, read_write> dest: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = flat_index(gid, groups);
    let step = current_step();
    if (index >= step.y * params.width) {
        return;
    }
    let r = index / params.width;
    let c = index % params.width;
    dest[index] = source[batch_rows[step.x + r] * params.width + c];
}
