//! The built-in featurizer: signed feature hashing of word unigrams, word bigrams and
//! character trigrams into `dim` floats, L2-normalised. It lets an app with no encoder use
//! tacit-rm at all; apps with a sentence encoder pass its vectors instead.
//!
//! The hash is FNV-1a over UTF-8 bytes with a per-feature-kind salt, so that the same text
//! maps to the same vector on every platform and in every version of this crate.

use crate::error::{Error, Result};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(salt: u8, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ salt as u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    // Final avalanche: FNV's low bits are weak for short keys.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn add(v: &mut [f32], salt: u8, key: &[u8], weight: f32) {
    let h = fnv1a(salt, key);
    let idx = (h % v.len() as u64) as usize;
    let sign = if (h >> 63) & 1 == 1 { -1.0 } else { 1.0 };
    v[idx] += sign * weight;
}

/// The most floats one [`featurize_batch`] call returns (256 MiB): a page's wasm memory
/// never shrinks, so an oversized request is refused before anything is allocated.
pub const MAX_BATCH_FLOATS: usize = 1 << 26;

fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 || dim > crate::head::MAX_WIDTH {
        return Err(Error::InvalidConfig(format!(
            "featurizer dim {dim} outside 1..={}",
            crate::head::MAX_WIDTH
        )));
    }
    Ok(())
}

/// Hashes `text` into a unit vector of `dim` floats (all zeros for a text with no features).
pub fn featurize(text: &str, dim: usize) -> Result<Vec<f32>> {
    check_dim(dim)?;
    let mut v = vec![0.0f32; dim];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for w in &words {
        add(&mut v, 1, w.as_bytes(), 1.0);
    }
    for pair in words.windows(2) {
        add(
            &mut v,
            2,
            format!("{} {}", pair[0], pair[1]).as_bytes(),
            0.7,
        );
    }
    let chars: Vec<char> = lower.chars().collect();
    for tri in chars.windows(3) {
        let s: String = tri.iter().collect();
        add(&mut v, 3, s.as_bytes(), 0.3);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(v)
}

/// Featurizes many texts into a row-major `[texts.len(), dim]` buffer.
pub fn featurize_batch(texts: &[&str], dim: usize) -> Result<Vec<f32>> {
    check_dim(dim)?;
    let total = texts
        .len()
        .checked_mul(dim)
        .filter(|&n| n <= MAX_BATCH_FLOATS)
        .ok_or_else(|| {
            Error::InvalidData(format!(
                "{} texts × dim {dim} exceeds {MAX_BATCH_FLOATS} floats per call: featurize fewer texts at a time",
                texts.len()
            ))
        })?;
    let mut out = Vec::with_capacity(total);
    for t in texts {
        out.extend(featurize(t, dim)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn unit_norm_deterministic_and_similarity_preserving() {
        let a = featurize("The quick brown fox jumps over the lazy dog", 384).unwrap();
        let a2 = featurize("the quick brown fox jumps over the lazy dog!", 384).unwrap();
        let b = featurize("Quarterly revenue rose by four percent", 384).unwrap();
        assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        assert!(cos(&a, &a2) > 0.95, "{}", cos(&a, &a2));
        assert!(cos(&a, &b).abs() < 0.3, "{}", cos(&a, &b));
        assert_eq!(featurize("", 8).unwrap(), vec![0.0; 8]);
        assert!(featurize("x", 0).is_err());
        assert_eq!(featurize_batch(&["a b", "c"], 16).unwrap().len(), 32);
    }

    #[test]
    fn oversized_batches_are_refused_before_allocating() {
        // 2^20 texts at dim 2^22 would reserve 16 TiB up front (an abort, not an error).
        let texts = vec![""; 1 << 20];
        let e = featurize_batch(&texts, 1 << 22).unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_config", "{e}");
        // A valid dim, but more floats than one call may return.
        let e = featurize_batch(&texts, 1 << 10).unwrap_err();
        assert_eq!(e.code().as_str(), "invalid_data", "{e}");
        assert!(featurize_batch(&texts[..4], 1 << 10).is_ok());
    }
}
