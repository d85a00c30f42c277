//! The masks of a round, mod 2³². Member `u` sends
//! `y_u = x_u + PRG(b_u) + Σ_{v ∈ U2, v > u} PRG(s_uv) − Σ_{v ∈ U2, v < u} PRG(s_uv)`:
//! every pairwise mask appears once with each sign, so they cancel in the sum over any set
//! containing both ends of each pair, and the self masks `PRG(b_u)` are removed by the
//! server once `t` members reveal shares of `b_u` (Bonawitz et al. 2017, §4).

use super::crypto::{expand_mask, pair_seed, self_seed, RoundContext};

/// Whether `u` adds (rather than subtracts) the mask it shares with `v`.
pub fn adds_pair_mask(u: u32, v: u32) -> bool {
    u < v
}

/// `acc ± PRG(seed)`, wrapping.
pub fn apply(acc: &mut [u32], seed: &[u8; 32], add: bool) {
    let mask = expand_mask(seed, acc.len());
    for (a, m) in acc.iter_mut().zip(mask) {
        *a = if add {
            a.wrapping_add(m)
        } else {
            a.wrapping_sub(m)
        };
    }
}

/// Adds member `u`'s self mask (`add = false` removes it).
pub fn apply_self(acc: &mut [u32], seed: &[u8; 32], ctx: &RoundContext, u: u32, add: bool) {
    apply(acc, &self_seed(seed, ctx, u), add);
}

/// Adds what `u` adds for its pair with `v`, given their X25519 shared secret (`add = false`:
/// removes it).
pub fn apply_pair(
    acc: &mut [u32],
    shared: &[u8; 32],
    ctx: &RoundContext,
    u: u32,
    v: u32,
    add: bool,
) {
    apply(
        acc,
        &pair_seed(shared, ctx, u, v),
        adds_pair_mask(u, v) == add,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three members with arbitrary pairwise secrets: the pairwise masks cancel exactly in
    /// the sum, which is then the inputs' sum plus the self masks — and nothing else.
    #[test]
    fn pairwise_masks_cancel_exactly_mod_2_32() {
        let ctx = RoundContext::new("m", 4);
        let secret = |a: u32, b: u32| [(a.min(b) * 16 + a.max(b)) as u8; 32];
        let inputs = [vec![1u32, 2, u32::MAX], vec![10, 20, 30], vec![0, 0, 5]];
        let mut sum = vec![0u32; 3];
        for u in 0..3u32 {
            let mut y = inputs[u as usize].clone();
            for v in (0..3).filter(|&v| v != u) {
                apply_pair(&mut y, &secret(u, v), &ctx, u, v, true);
            }
            // A masked input looks nothing like its input.
            assert_ne!(y, inputs[u as usize]);
            sum.iter_mut()
                .zip(&y)
                .for_each(|(s, y)| *s = s.wrapping_add(*y));
        }
        // 1 + 10 + 0, 2 + 20 + 0, (2³² − 1) + 30 + 5 mod 2³² = 34.
        assert_eq!(sum, vec![11, 22, 34]);
        // Adding and removing a self mask is the identity.
        let mut v = vec![7u32; 5];
        apply_self(&mut v, &[3u8; 32], &ctx, 1, true);
        assert_ne!(v, vec![7u32; 5]);
        apply_self(&mut v, &[3u8; 32], &ctx, 1, false);
        assert_eq!(v, vec![7u32; 5]);
    }

    #[test]
    fn the_smaller_index_adds() {
        assert!(adds_pair_mask(1, 2));
        assert!(!adds_pair_mask(2, 1));
    }
}
