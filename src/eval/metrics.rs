//! Scores against true labels: AUROC, pairwise accuracy, and calibration-sensitive metrics
//! of `σ(score)` (MAE, R², Pearson, NLL).

use serde::{Deserialize, Serialize};

use crate::math::sigmoid;

/// AUROC by the Mann–Whitney statistic with average ranks for ties; `None` if one class is
/// absent or the lengths differ.
pub fn auroc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = avg;
        }
        i = j + 1;
    }
    let n_pos = labels.iter().filter(|&&l| l > 0.5).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let rank_sum: f64 = (0..labels.len())
        .filter(|&i| labels[i] > 0.5)
        .map(|i| ranks[i])
        .sum();
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// Within each group, the fraction of (better, worse) pairs ranked correctly (ties 0.5).
/// `None` if no group has two differently labelled rows, or a group names a missing row.
pub fn pair_accuracy(scores: &[f32], labels: &[f32], groups: &[Vec<usize>]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    if groups.iter().flatten().any(|&i| i >= n) {
        return None;
    }
    let (mut right, mut total) = (0.0, 0.0);
    for g in groups {
        for &a in g {
            for &b in g {
                if labels[a] > labels[b] {
                    total += 1.0;
                    right += match scores[a].total_cmp(&scores[b]) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
        }
    }
    (total > 0.0).then(|| right / total)
}

/// Metrics of one trained model on a test set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub auroc: f64,
    pub pair_acc: Option<f64>,
    pub mae: f64,
    pub r2: f64,
    pub pearson: f64,
    pub nll: f64,
}

pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va <= 0.0 || vb <= 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// All metrics for logit `scores` against binary `labels`.
pub fn evaluate(scores: &[f32], labels: &[f32], groups: &[Vec<usize>]) -> crate::Result<Metrics> {
    use crate::error::{check, Error};
    check::non_empty("scores", scores.len())?;
    check::len("labels", scores.len(), labels.len())?;
    check::finite("scores", scores)?;
    if groups.iter().flatten().any(|&i| i >= scores.len()) {
        return Err(Error::InvalidData(
            "a group names a row outside the scores".into(),
        ));
    }
    let p: Vec<f64> = scores.iter().map(|&s| sigmoid(s as f64)).collect();
    let y: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
    let n = y.len() as f64;
    let mean_y = y.iter().sum::<f64>() / n;
    let ss_res: f64 = p.iter().zip(&y).map(|(p, y)| (y - p).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|y| (y - mean_y).powi(2)).sum();
    Ok(Metrics {
        auroc: auroc(scores, labels).unwrap_or(f64::NAN),
        pair_acc: pair_accuracy(scores, labels, groups),
        mae: p.iter().zip(&y).map(|(p, y)| (p - y).abs()).sum::<f64>() / n,
        r2: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            f64::NAN
        },
        pearson: pearson(&p, &y),
        nll: p
            .iter()
            .zip(&y)
            .map(|(&p, &y)| {
                let p = p.clamp(1e-7, 1.0 - 1e-7);
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_matches_brute_force_pair_counting_with_ties() {
        let s = [0.1f32, 0.4, 0.4, 0.8, 0.3, 0.4];
        let y = [0.0f32, 1.0, 0.0, 1.0, 1.0, 0.0];
        let mut wins = 0.0;
        let mut total = 0.0;
        for i in 0..6 {
            for j in 0..6 {
                if y[i] == 1.0 && y[j] == 0.0 {
                    total += 1.0;
                    wins += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((auroc(&s, &y).unwrap() - wins / total).abs() < 1e-12);
        assert_eq!(auroc(&s, &[1.0; 6]), None);
        let groups = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        assert_eq!(pair_accuracy(&s, &y, &groups), Some(2.0 / 3.0));
    }

    #[test]
    fn perfect_and_useless_predictions() {
        let y = [0.0f32, 1.0, 1.0, 0.0];
        let m = evaluate(&[-20.0, 20.0, 20.0, -20.0], &y, &[]).unwrap();
        assert!(m.auroc == 1.0 && m.mae < 1e-6 && (m.r2 - 1.0).abs() < 1e-6 && m.nll < 1e-6);
        let flat = evaluate(&[0.0; 4], &y, &[]).unwrap();
        assert!(evaluate(&[0.0; 3], &y, &[]).is_err());
        assert!(flat.auroc == 0.5 && (flat.nll - 2f64.ln()).abs() < 1e-9 && flat.pearson == 0.0);
    }
}
