// lgamma, digamma and trigamma in f32 for x > 0 (mirrors src/math.rs): shift to x ≥ 6 by
// recurrence, then the asymptotic series (f32 needs fewer terms than the f64 reference).

fn digamma(x0: f32) -> f32 {
    var x = x0;
    var acc = 0.0;
    while (x < 6.0) {
        acc = acc - 1.0 / x;
        x = x + 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    return acc + log(x) - 0.5 * inv - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 / 252.0));
}

fn trigamma(x0: f32) -> f32 {
    var x = x0;
    var acc = 0.0;
    while (x < 6.0) {
        acc = acc + 1.0 / (x * x);
        x = x + 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    return acc + inv + 0.5 * inv2 + inv * inv2 * (1.0 / 6.0 - inv2 * (1.0 / 30.0 - inv2 / 42.0));
}

fn lgamma(x0: f32) -> f32 {
    var x = x0;
    var acc = 0.0;
    while (x < 6.0) {
        acc = acc - log(x);
        x = x + 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    return acc + (x - 0.5) * log(x) - x + 0.9189385 + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0));
}
