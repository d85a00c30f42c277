// The 4 × 4 register tiles of the linear kernels (linear_forward, linear_backward_weights):
// the indices of a tile's four rows or columns, and one of its four accumulators by index.

// start, start + 1, start + 2, start + 3, each clamped to `last`: the lanes past an edge repeat
// the last index, so that they read valid memory; they are computed and not written.
fn tile_indices(start: u32, last: u32) -> vec4<u32> {
    return vec4<u32>(start, min(start + 1u, last), min(start + 2u, last), min(start + 3u, last));
}

// Accumulator k of a tile the kernels hold as four variables rather than an indexed array (an
// array indexed at run time may be kept in memory, which a software adapter pays for on every
// step of the inner loop).
fn tile_row(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, k: u32) -> vec4<f32> {
    if (k == 1u) {
        return a1;
    }
    if (k == 2u) {
        return a2;
    }
    if (k == 3u) {
        return a3;
    }
    return a0;
}
