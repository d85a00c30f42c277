//! Numerically stable scalar functions used by the objectives (all in f64: losses are
//! accumulated in double precision even though weights and activations are f32).

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + e^x)` without overflow.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `log σ(x)`.
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// `log(1 − e^a)` for `a ≤ 0` (Mächler's log1mexp): the two branches keep full precision
/// both when `e^a` is tiny and when it is close to one.
pub fn log1mexp(a: f64) -> f64 {
    debug_assert!(a <= 0.0);
    if a > -std::f64::consts::LN_2 {
        (-a.exp_m1()).ln()
    } else {
        (-a.exp()).ln_1p()
    }
}

/// `log Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; ~1e-15 relative).
pub fn lgamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps accuracy for small arguments.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - lgamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Digamma `ψ(x)` for `x > 0`: shift to x ≥ 10 by recurrence, then the asymptotic series.
pub fn digamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    acc + x.ln()
        - 0.5 * inv
        - inv2
            * (1.0 / 12.0
                - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))))
}

/// Trigamma `ψ'(x)` for `x > 0`, same scheme as [`digamma`].
pub fn trigamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 10.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    acc + inv
        + 0.5 * inv2
        + inv * inv2 * (1.0 / 6.0 - inv2 * (1.0 / 30.0 - inv2 * (1.0 / 42.0 - inv2 / 30.0)))
}

/// A stable sort of `v` by `cmp`: the order std's stable `sort_by` gives. std's sorts are
/// instantiated once per element type and comparator (3–9 KiB of wasm each, a dozen of them
/// in the browser package); this sorts indices through one instantiation behind a `dyn`
/// comparator, then moves the elements into place.
pub fn sort_by<T>(v: &mut Vec<T>, mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) {
    let order = sorted_order(v.len(), &mut |a, b| cmp(&v[a], &v[b]));
    let mut slots: Vec<Option<T>> = std::mem::take(v).into_iter().map(Some).collect();
    v.extend(
        order
            .into_iter()
            .map(|i| slots[i].take().expect("each index once")),
    );
}

/// The indices `0..n` in the order `cmp` sorts them, ties in index order. Not inlined: one
/// copy of the sort for every caller.
#[inline(never)]
pub fn sorted_order(
    n: usize,
    cmp: &mut dyn FnMut(usize, usize) -> std::cmp::Ordering,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn special_functions_match_known_values() {
        // Γ(n) = (n−1)!, Γ(1/2) = √π, ψ(1) = −γ, ψ'(1) = π²/6, ψ(1/2) = −γ − 2 ln 2.
        let euler = 0.577_215_664_901_532_9;
        let pi = std::f64::consts::PI;
        assert!(close(lgamma(5.0), 24f64.ln(), 1e-13));
        assert!(close(lgamma(0.5), pi.sqrt().ln(), 1e-13));
        assert!(close(
            lgamma(30.0),
            (1..30).map(|k| (k as f64).ln()).sum(),
            1e-12
        ));
        assert!(close(digamma(1.0), -euler, 1e-12));
        assert!(close(digamma(0.5), -euler - 2.0 * 2f64.ln(), 1e-12));
        assert!(close(trigamma(1.0), pi * pi / 6.0, 1e-12));
        assert!(close(trigamma(0.5), pi * pi / 2.0, 1e-12));
    }

    #[test]
    fn derivatives_chain_by_finite_differences() {
        for &x in &[0.05f64, 0.3, 1.0, 2.7, 6.5, 40.0] {
            let h = 1e-5 * x.max(1.0);
            let d_lgamma = (lgamma(x + h) - lgamma(x - h)) / (2.0 * h);
            let d_digamma = (digamma(x + h) - digamma(x - h)) / (2.0 * h);
            assert!(close(d_lgamma, digamma(x), 1e-6), "x={x}");
            assert!(close(d_digamma, trigamma(x), 1e-5), "x={x}");
        }
    }

    #[test]
    fn stable_logistic_helpers() {
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0 && softplus(-1000.0) < 1e-300);
        assert!(close(log_sigmoid(-800.0), -800.0, 1e-12));
        for &a in &[-1e-12, -1e-3, -0.5, -3.0, -50.0] {
            let direct = (1.0 - f64::exp(a)).ln();
            assert!(close(log1mexp(a), direct, 1e-6) || a > -1e-6, "a={a}");
            assert!(log1mexp(a).is_finite());
        }
        assert!(close(log1mexp(-1e-12), (1e-12f64).ln(), 1e-6));
    }

    #[test]
    fn sort_by_is_std_stable_sort() {
        let v: Vec<(u8, u32)> = (0..500u32).map(|i| (((i * 7919) % 13) as u8, i)).collect();
        let mut ours = v.clone();
        super::sort_by(&mut ours, |a, b| a.0.cmp(&b.0));
        let mut std = v;
        std.sort_by_key(|a| a.0);
        assert_eq!(ours, std);
        let mut empty: Vec<String> = Vec::new();
        super::sort_by(&mut empty, |a, b| a.cmp(b));
        assert!(empty.is_empty());
    }
}
