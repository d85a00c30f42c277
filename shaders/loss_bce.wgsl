// The weighted-logistic family (naive, ips, snips, noise, noise-ips, dr):
// ℓ = w·(sp(z) − t·z) split into partial risks A·sp(−z) + B·sp(z) (A = w·t, B = w·(1−t)),
// each clamped at 0 under the non-negative correction (src/objective/bce.rs).

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_id) local: vec3<u32>) {
    let lid = local.x;
    let step = current_step();
    let b = step.y;
    let inv_n = 1.0 / f32(max(b, 1u));
    let limit = params.logit_clip;

    var norm = 1.0;
    if (params.variant == 1u) {
        var s = 0.0;
        for (var r = lid; r < b; r = r + WORKGROUP_SIZE) {
            s = s + row_data[batch_rows[step.x + r]].z;
        }
        red0[lid] = s;
        red1[lid] = 0.0;
        red2[lid] = 0.0;
        reduce3(lid);
        let mean = red0[0] / f32(max(b, 1u));
        if (mean > 0.0) {
            norm = mean;
        }
        workgroupBarrier();
    }

    var pos = 0.0;
    var neg = 0.0;
    for (var r = lid; r < b; r = r + WORKGROUP_SIZE) {
        let d = row_data[batch_rows[step.x + r]];
        let t = d.y / norm;
        let zc = clamp(outputs[r], -limit, limit);
        pos = pos + d.x * t * softplus(-zc);
        neg = neg + d.x * (1.0 - t) * softplus(zc);
    }
    red0[lid] = pos;
    red1[lid] = neg;
    red2[lid] = 0.0;
    reduce3(lid);
    let p = red0[0] * inv_n;
    let q = red1[0] * inv_n;
    let corrected = nonneg_correct(p, q);
    let sp = corrected.y;
    let sn = corrected.z;
    var loss = corrected.x;
    if (params.mode == 0u) {
        for (var r = lid; r < b; r = r + WORKGROUP_SIZE) {
            let d = row_data[batch_rows[step.x + r]];
            let t = d.y / norm;
            let z = outputs[r];
            let s = sigmoid(clamp(z, -limit, limit));
            let g = inv_n * (-sp * d.x * t * (1.0 - s) + sn * d.x * (1.0 - t) * s);
            d_out[r] = mask_clipped(z, limit, g);
        }
    }
    record_loss(lid, loss, f32(b));
}
