//! The non-negative risk correction (nnPU, Kiryo et al. 2017).
//!
//! Every loss of the (w, t) family splits into two class-wise partial risks,
//! `R = (1/n)Σ Aᵢ·ℓ⁺(zᵢ) + (1/n)Σ Bᵢ·ℓ⁻(zᵢ)` with `ℓ± ≥ 0` (`A = w·t`, `B = w·(1−t)`).
//! With the true labels both sums are ≥ 0. Unbiased estimators use targets outside [0, 1]
//! (`t = o/π̂ > 1` for IPS, `t < 0` for noise correction), so `A` or `B` can be negative, and a
//! flexible head then drives one partial risk, and the whole loss, to −∞ by pushing a few
//! logits to ±∞. Clamping each partial risk at 0 keeps the loss bounded below; its gradient
//! is exactly the gradient of the clamped value (zero for a clamped part).

/// The two partial risks of a batch (already divided by the batch size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartialRisks {
    pub positive: f64,
    pub negative: f64,
}

/// The corrected loss and the factor (0 or 1) applied to each part's gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Corrected {
    pub loss: f64,
    pub positive_scale: f64,
    pub negative_scale: f64,
}

pub fn correct(risks: PartialRisks, enabled: bool) -> Corrected {
    if !enabled {
        return Corrected {
            loss: risks.positive + risks.negative,
            positive_scale: 1.0,
            negative_scale: 1.0,
        };
    }
    let keep = |r: f64| if r < 0.0 { 0.0 } else { 1.0 };
    Corrected {
        loss: risks.positive.max(0.0) + risks.negative.max(0.0),
        positive_scale: keep(risks.positive),
        negative_scale: keep(risks.negative),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_only_negative_parts() {
        let c = correct(
            PartialRisks {
                positive: 0.4,
                negative: -2.0,
            },
            true,
        );
        assert_eq!(
            (c.loss, c.positive_scale, c.negative_scale),
            (0.4, 1.0, 0.0)
        );
        let u = correct(
            PartialRisks {
                positive: 0.4,
                negative: -2.0,
            },
            false,
        );
        assert!((u.loss + 1.6).abs() < 1e-12);
    }
}
