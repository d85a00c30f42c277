// `beta` (src/objective/beta.rs): Beta(μτ, (1−μ)τ) head with μ = σ(s), τ = softplus(u) + τ_min;
// expected NLL of the effective target (partial risks, non-negative correction) plus
// λ·KL(Beta(a, b) ‖ Beta(α₀, β₀)).

fn kl_beta(a: f32, b: f32, a0: f32, b0: f32) -> f32 {
    let ln_b0 = lgamma(a0) + lgamma(b0) - lgamma(a0 + b0);
    let ln_b = lgamma(a) + lgamma(b) - lgamma(a + b);
    return ln_b0 - ln_b + (a - a0) * digamma(a) + (b - b0) * digamma(b) + (a0 - a + b0 - b) * digamma(a + b);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_id) local: vec3<u32>) {
    let lid = local.x;
    let step = current_step();
    let b_rows = step.y;
    let inv_n = 1.0 / f32(max(b_rows, 1u));
    let limit = min(params.logit_clip, 15.0);
    let a0 = params.beta_alpha0;
    let b0 = params.beta_beta0;

    var pos = 0.0;
    var neg = 0.0;
    var kl = 0.0;
    for (var r = lid; r < b_rows; r = r + WORKGROUP_SIZE) {
        let d = row_data[batch_rows[step.x + r]];
        let s = clamp(outputs[2u * r], -limit, limit);
        let u = outputs[2u * r + 1u];
        let mu = sigmoid(s);
        let tau = softplus(u) + params.beta_tau_min;
        let a = mu * tau;
        let b = (1.0 - mu) * tau;
        let psi_ab = digamma(a + b);
        pos = pos + d.x * d.y * (psi_ab - digamma(a));
        neg = neg + d.x * (1.0 - d.y) * (psi_ab - digamma(b));
        kl = kl + kl_beta(a, b, a0, b0);
    }
    red0[lid] = pos;
    red1[lid] = neg;
    red2[lid] = kl;
    reduce3(lid);
    let p = red0[0] * inv_n;
    let q = red1[0] * inv_n;
    let kl_mean = red2[0] * inv_n;
    let corrected = nonneg_correct(p, q);
    let sp = corrected.y;
    let sn = corrected.z;
    var loss = corrected.x;
    loss = loss + params.beta_lambda * kl_mean;

    if (params.mode == 0u) {
        for (var r = lid; r < b_rows; r = r + WORKGROUP_SIZE) {
            let d = row_data[batch_rows[step.x + r]];
            let s_raw = outputs[2u * r];
            let s = clamp(s_raw, -limit, limit);
            let u = outputs[2u * r + 1u];
            let mu = sigmoid(s);
            let tau = softplus(u) + params.beta_tau_min;
            let sig_u = sigmoid(u);
            let a = mu * tau;
            let b = (1.0 - mu) * tau;
            let tri_a = trigamma(a);
            let tri_b = trigamma(b);
            let tri_ab = trigamma(a + b);
            let cp = sp * d.x * d.y;
            let cn = sn * d.x * (1.0 - d.y);
            let rest = a0 + b0 - a - b;
            let da = inv_n * (cp * (tri_ab - tri_a) + cn * tri_ab
                + params.beta_lambda * ((a - a0) * tri_a + rest * tri_ab));
            let db = inv_n * (cp * tri_ab + cn * (tri_ab - tri_b)
                + params.beta_lambda * ((b - b0) * tri_b + rest * tri_ab));
            let d_mu = tau * (da - db);
            let d_tau = mu * da + (1.0 - mu) * db;
            d_out[2u * r] = mask_clipped(s_raw, limit, d_mu * mu * (1.0 - mu));
            d_out[2u * r + 1u] = d_tau * sig_u;
        }
    }
    record_loss(lid, loss, f32(b_rows));
}
