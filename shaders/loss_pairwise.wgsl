// `pairwise` (src/objective/pairwise.rs): mean over the batch's pairs of w·sp(−(z_w − z_l)).
// Each row sums its own pairs' contributions (no float atomics: a row may be in many pairs).

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_id) local: vec3<u32>) {
    let lid = local.x;
    let step = current_step();
    let b = step.y;
    let n_pairs = step.w;
    let inv_p = 1.0 / f32(max(n_pairs, 1u));
    var total = 0.0;
    for (var k = lid; k < n_pairs; k = k + WORKGROUP_SIZE) {
        let p = pairs[step.z + k];
        let delta = outputs[p.x] - outputs[p.y];
        total = total + bitcast<f32>(p.z) * softplus(-delta) * inv_p;
    }
    if (params.mode == 0u) {
        for (var r = lid; r < b; r = r + WORKGROUP_SIZE) {
            var g = 0.0;
            for (var k = 0u; k < n_pairs; k = k + 1u) {
                let p = pairs[step.z + k];
                if (p.x == r || p.y == r) {
                    let delta = outputs[p.x] - outputs[p.y];
                    let c = bitcast<f32>(p.z) * sigmoid(-delta) * inv_p;
                    if (p.x == r) {
                        g = g - c;
                    } else {
                        g = g + c;
                    }
                }
            }
            d_out[r] = g;
        }
    }
    red0[lid] = total;
    red1[lid] = 0.0;
    red2[lid] = 0.0;
    reduce3(lid);
    record_loss(lid, red0[0], f32(n_pairs));
}
