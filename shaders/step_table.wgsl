// The step table (see README.md), shared by every kernel that reads the current batch:
// steps[s] = (row_offset, row_count, pair_offset, pair_count) of batch s; state[0] is the batch
// being processed and state[1] the number of AdamW steps taken (written by step_end.wgsl).

@group(0) @binding(1) var<storage, read> steps: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> state: array<u32>;

// (row_offset, row_count, pair_offset, pair_count) of the batch being processed.
fn current_step() -> vec4<u32> {
    return steps[state[0]];
}
