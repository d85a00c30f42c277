//! Fixed-point quantisation into Z/2³² after clipping (SecAgg works on integers mod a
//! modulus; Flower's `quantization_range` / `modulus_range` play the same part).
//!
//! A client's delta is clipped to L2 norm `C` first, so every coordinate lies in [−C, C].
//! Each is mapped to the integer `round(x · s)` in two's complement mod 2³², with the scale
//! `s = (2³¹ − 1 − n) / (n · C)` for a cohort of at most `n`: a sum of `n` such integers
//! stays within ±(2³¹ − 1) (each is at most `C·s + ½` in magnitude), so the sum mod 2³²
//! decodes to the exact integer sum and no wrap-around ever corrupts it.
//!
//! The error, stated in advance: rounding moves each client's coordinate by at most
//! `1 / (2s)`, so each coordinate of the decoded sum is within `n / (2s)` of the true sum and
//! each coordinate of the mean within [`Quantizer::max_mean_error`] = `1 / (2s)`
//! (≈ 2.3·10⁻⁸ for n = 10, C = 10) — far below an f32 ulp of typical weights.

use super::error::{SecAggError, SecAggResult};

/// Bits of the modulus: every vector entry is a `u32` and arithmetic wraps mod 2³².
pub const MODULUS_BITS: u32 = 32;

/// The quantiser of one round: fixed by its cohort bound and clip norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    clip_norm: f64,
    cohort: u32,
    scale: f64,
}

impl Quantizer {
    pub fn new(clip_norm: f64, cohort: u32) -> SecAggResult<Self> {
        if !(clip_norm.is_finite() && clip_norm > 0.0 && clip_norm <= 1e12) {
            return Err(SecAggError::InvalidParams(format!(
                "clip norm {clip_norm} is not in (0, 1e12]"
            )));
        }
        // 255: the Shamir shares' x-coordinates are one byte (see `shamir`).
        if !(1..=255).contains(&cohort) {
            return Err(SecAggError::InvalidParams(format!(
                "cohort {cohort} is not in [1, 255]"
            )));
        }
        let n = f64::from(cohort);
        let scale = (f64::from(i32::MAX) - n) / (n * clip_norm);
        Ok(Quantizer {
            clip_norm,
            cohort,
            scale,
        })
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The most one coordinate of the decoded mean can differ from the mean of the clipped
    /// inputs (rounding only).
    pub fn max_mean_error(&self) -> f64 {
        0.5 / self.scale
    }

    /// Integers mod 2³² of a clipped delta. Coordinates are clamped to [−C, C] (a clipped
    /// delta is already inside: the clamp only guards the bound the decoding relies on).
    pub fn encode(&self, values: &[f32]) -> SecAggResult<Vec<u32>> {
        values
            .iter()
            .map(|&v| {
                if !v.is_finite() {
                    return Err(SecAggError::OutOfRange(format!("non-finite value {v}")));
                }
                let x = f64::from(v).clamp(-self.clip_norm, self.clip_norm);
                // |x·s| ≤ 2³¹: the cast is exact and in range.
                let q = (x * self.scale).round() as i64;
                Ok(q as i32 as u32)
            })
            .collect()
    }

    /// The real-valued sum of `count` encoded inputs from their sum mod 2³². A count over
    /// the cohort bound could have wrapped: refused.
    pub fn decode_sum(&self, sum: &[u32], count: usize) -> SecAggResult<Vec<f64>> {
        if count > self.cohort as usize {
            return Err(SecAggError::OutOfRange(format!(
                "{count} inputs, more than the cohort bound {}",
                self.cohort
            )));
        }
        Ok(sum
            .iter()
            .map(|&q| f64::from(q as i32) / self.scale)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_is_the_stated_formula() {
        let q = Quantizer::new(10.0, 10).unwrap();
        assert_eq!(q.scale(), (2_147_483_647.0 - 10.0) / 100.0);
        assert!((q.max_mean_error() - 2.328_306_5e-8).abs() < 1e-13);
        assert!(Quantizer::new(0.0, 10).is_err());
        assert!(Quantizer::new(1.0, 0).is_err());
        assert!(Quantizer::new(1.0, 256).is_err());
        assert!(Quantizer::new(f64::NAN, 3).is_err());
    }

    #[test]
    fn encodes_in_twos_complement_and_clamps() {
        let q = Quantizer::new(1.0, 1).unwrap();
        let s = q.scale();
        let e = q.encode(&[0.0, 0.5, -0.5, 3.0, -3.0]).unwrap();
        assert_eq!(e[0], 0);
        assert_eq!(e[1], (0.5 * s).round() as u32);
        assert_eq!(e[2], ((-(0.5 * s).round()) as i64) as u32);
        // Clamped to ±C: ±(2³¹ − 2) at n = 1.
        assert_eq!(e[3], 2_147_483_646);
        assert_eq!(e[4] as i32, -2_147_483_646);
        assert!(q.encode(&[f32::NAN]).is_err());
    }

    /// A full cohort at the extremes sums without wrapping, and decodes within the bound.
    #[test]
    fn a_full_cohort_at_the_bound_never_wraps() {
        let n = 255u32;
        let q = Quantizer::new(2.0, n).unwrap();
        for x in [2.0f32, -2.0, 1.234_567] {
            let one = q.encode(&[x]).unwrap()[0];
            let sum = (0..n).fold(0u32, |acc, _| acc.wrapping_add(one));
            let got = q.decode_sum(&[sum], n as usize).unwrap()[0];
            let want = f64::from(x) * f64::from(n);
            assert!(
                (got - want).abs() <= f64::from(n) * q.max_mean_error() + 1e-9,
                "{x}: {got} vs {want}"
            );
        }
        assert!(q.decode_sum(&[0], 256).is_err());
    }
}
