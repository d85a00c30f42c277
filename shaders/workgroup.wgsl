// The workgroup size of every kernel but step_end, a pipeline-overridable constant: the Rust
// side passes `WORKGROUP_SIZE` (src/backend/gpu/kernels.rs) in the pipeline's constants, and
// the pipeline cache is keyed by it. The loss kernels' tree reduction needs a power of two.
override WORKGROUP_SIZE: u32 = 256u;

// The flat invocation index of an element-wise kernel on the 2-D grid of `plan::grid`.
fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP_SIZE;
}
