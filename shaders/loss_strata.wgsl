// `implicit` (src/objective/strata.rs): observed-data likelihood of o = O·R with exposure
// logit a (aux) and preference logit z; log(1 − μγ) through log1mexp.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_id) local: vec3<u32>) {
    let lid = local.x;
    let step = current_step();
    let b = step.y;
    let inv_n = 1.0 / f32(max(b, 1u));
    let limit = params.logit_clip;
    var total = 0.0;
    for (var r = lid; r < b; r = r + WORKGROUP_SIZE) {
        let o = row_data[batch_rows[step.x + r]].w;
        let z = outputs[r];
        let a = outputs[params.aux_offset + r];
        let zc = clamp(z, -limit, limit);
        let ac = clamp(a, -limit, limit);
        let gamma = sigmoid(zc);
        let mu = sigmoid(ac);
        let log_joint = log_sigmoid(zc) + log_sigmoid(ac);
        var l = 0.0;
        var gz = 0.0;
        var ga = 0.0;
        if (o > 0.5) {
            l = -log_joint;
            gz = -(1.0 - gamma);
            ga = -(1.0 - mu);
        } else {
            let log_rest = log1mexp(min(log_joint, -1e-30));
            let ratio = exp(log_joint - log_rest);
            l = -log_rest;
            gz = ratio * (1.0 - gamma);
            ga = ratio * (1.0 - mu);
        }
        total = total + l * inv_n;
        if (params.mode == 0u) {
            d_out[r] = mask_clipped(z, limit, gz * inv_n);
            d_out[params.aux_offset + r] = mask_clipped(a, limit, ga * inv_n);
        }
    }
    red0[lid] = total;
    red1[lid] = 0.0;
    red2[lid] = 0.0;
    reduce3(lid);
    record_loss(lid, red0[0], f32(b));
}
