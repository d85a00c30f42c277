// Copies the rows of the current batch out of a resident matrix: dest[r, :] = source[rows[r], :].

struct Params {
    width: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> steps: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read> batch_rows: array<u32>;
@group(0) @binding(4) var<storage, read> source: array<f32>;
@group(0) @binding(5) var<storage, read_write> dest: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let index = gid.x + gid.y * groups.x * 256u;
    let step = steps[state[0]];
    if (index >= step.y * params.width) {
        return;
    }
    let r = index / params.width;
    let c = index % params.width;
    dest[index] = source[batch_rows[step.x + r] * params.width + c];
}
