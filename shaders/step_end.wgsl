// Advances to the next batch (state[0]) and, after an optimizer step, the AdamW step count
// (state[1]). A single invocation: it is the last dispatch of every step.

struct Params {
    advance_optimizer: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;

@compute @workgroup_size(1)
fn main() {
    state[0] = state[0] + 1u;
    if (params.advance_optimizer == 1u) {
        state[1] = state[1] + 1u;
    }
}
