//! The feedback log: observations an app reported and the model has not yet trained on, and
//! how a batch of them becomes [`Examples`] (labels, standardised exposure features,
//! propensities, and pairs among answers shown together).
//!
//! The log is what the browser package persists between `observe` and `train`, so an entry
//! carries everything needed to rebuild its example row, and nothing of the user's text.

use ndarray::Array2;

use super::events::{exposure_features, label_of, Observation};
use super::propensity::PropensityModel;
use super::{Examples, Pair, EXPOSURE_FEATURES};
use crate::error::{check, Error, Result};

/// Ridge strength of the propensity model fitted on a log (standardised scale). Logs are
/// small (tens to thousands of exposures) and the features are only the four exposure
/// features, so a light penalty keeps the fit stable without flattening it.
pub const PROPENSITY_L2: f64 = 1.0;

/// Propensities are floored here when the log cannot support a fit (every exposure reacted
/// to, or none): the objectives clip π̂ again, but an exact 0 must never reach a division.
const PROPENSITY_FLOOR: f32 = 0.05;

/// A log entry is an [`Observation`] with its `seq` assigned: one type from the app to the log.
pub type LoggedObservation = Observation;

/// Turns logged observations into training examples for a head of width `dim`.
///
/// - labels from the last decisive event ([`label_of`]);
/// - exposure features standardised over this batch (the exposure head and the propensity
///   model both want zero-mean, unit-scale inputs);
/// - propensities: the app's where given, else a ridge-logistic fit of "reacted at all" on
///   the exposure features, calibrated in the large;
/// - pairs: within a turn, every liked answer over every answer not liked.
pub fn to_examples(entries: &[LoggedObservation], dim: usize) -> Result<Examples> {
    check::non_empty("logged observations", entries.len())?;
    let n = entries.len();
    let mut emb = Array2::<f32>::zeros((n, dim));
    let mut raw = Array2::<f32>::zeros((n, EXPOSURE_FEATURES.len()));
    let (mut observed, mut feedback, mut explicit) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, e) in entries.iter().enumerate() {
        e.validate(dim)?;
        emb.row_mut(i)
            .assign(&ndarray::ArrayView1::from(&e.embedding[..]));
        raw.row_mut(i)
            .assign(&ndarray::ArrayView1::from(&exposure_features(e)?[..]));
        let (o, m, y) = label_of(e);
        observed.push(o);
        feedback.push(m);
        explicit.push(y);
    }
    let propensity = propensities(entries, &raw, &feedback)?;
    let exposure = standardise(&raw);
    let pairs = turn_pairs(entries, &observed);
    let ex = Examples {
        emb,
        observed,
        feedback,
        explicit,
        propensity,
        exposure,
        pairs,
        offset: Vec::new(),
    };
    ex.validate()?;
    Ok(ex)
}

fn propensities(
    entries: &[LoggedObservation],
    raw: &Array2<f32>,
    feedback: &[f32],
) -> Result<Vec<f32>> {
    if entries.iter().all(|e| e.propensity.is_some()) {
        return Ok(entries
            .iter()
            .map(|e| e.propensity.unwrap_or(1.0))
            .collect());
    }
    let fitted = match PropensityModel::fit(raw.view(), feedback, PROPENSITY_L2) {
        Ok(model) => model.predict(raw.view())?,
        // Every exposure reacted to, or none: no contrast to fit; the rate is all we know.
        Err(Error::InvalidData(_)) => {
            let rate = feedback.iter().sum::<f32>() / feedback.len() as f32;
            vec![rate; feedback.len()]
        }
        Err(e) => return Err(e),
    };
    Ok(entries
        .iter()
        .zip(fitted)
        .map(|(e, p)| e.propensity.unwrap_or(p.clamp(PROPENSITY_FLOOR, 1.0)))
        .collect())
}

/// Zero mean, unit variance per column (constant columns are only centred).
fn standardise(raw: &Array2<f32>) -> Array2<f32> {
    let mut out = raw.clone();
    for mut col in out.columns_mut() {
        let n = col.len() as f64;
        let mean = col.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = col.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let scale = if var > 1e-12 { var.sqrt() } else { 1.0 };
        col.mapv_inplace(|v| ((v as f64 - mean) / scale) as f32);
    }
    out
}

/// Within each turn, each liked answer beats each answer shown with it and not liked.
fn turn_pairs(entries: &[LoggedObservation], observed: &[f32]) -> Vec<Pair> {
    let mut by_turn: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, e) in entries.iter().enumerate() {
        if let Some(t) = e.turn.as_deref() {
            by_turn.entry(t).or_default().push(i);
        }
    }
    let mut pairs = Vec::new();
    for rows in by_turn.values() {
        for &w in rows.iter().filter(|&&r| observed[r] > 0.5) {
            for &l in rows.iter().filter(|&&r| observed[r] <= 0.5) {
                pairs.push(Pair::new(w, l));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::events::{Event, Shown};

    fn entry(seq: u64, turn: &str, position: u32, events: Vec<Event>) -> LoggedObservation {
        LoggedObservation {
            seq,
            id: format!("a{seq}"),
            turn: Some(turn.into()),
            embedding: vec![seq as f32, 1.0, -1.0],
            shown: Shown {
                position,
                candidates: 3,
            },
            events,
            dwell_ms: 1000.0 * seq as f64,
            length: 100.0,
            propensity: None,
        }
    }

    #[test]
    fn a_log_becomes_labelled_rows_with_pairs_and_fitted_propensities() {
        let log = vec![
            entry(0, "t1", 0, vec![Event::Copy]),
            entry(1, "t1", 1, vec![]),
            entry(2, "t1", 2, vec![Event::ThumbsDown]),
            entry(3, "t2", 0, vec![]),
            entry(4, "t2", 1, vec![Event::ThumbsUp]),
            entry(5, "t2", 2, vec![]),
        ];
        let ex = to_examples(&log, 3).unwrap();
        assert_eq!(ex.observed, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(ex.feedback, vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        let pairs: Vec<(usize, usize)> = ex.pairs.iter().map(|p| (p.winner, p.loser)).collect();
        assert_eq!(pairs, vec![(0, 1), (0, 2), (4, 3), (4, 5)]);
        // Calibrated in the large: the mean propensity is the reaction rate (3 of 6).
        let mean = ex.propensity.iter().sum::<f32>() / 6.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
        for col in ex.exposure.columns() {
            assert!(col.iter().sum::<f32>().abs() < 1e-4);
        }
        assert_eq!(ex.emb[[4, 0]], 4.0);
    }

    #[test]
    fn bad_entries_are_refused_by_code() {
        let mut e = entry(0, "t", 0, vec![]);
        e.embedding[1] = f32::NAN;
        assert_eq!(
            e.validate(3).unwrap_err().code().as_str(),
            "non_finite_input"
        );
        assert_eq!(
            entry(0, "t", 0, vec![])
                .validate(4)
                .unwrap_err()
                .code()
                .as_str(),
            "dim_mismatch"
        );
        let mut e = entry(0, "t", 0, vec![]);
        e.propensity = Some(0.0);
        assert_eq!(e.validate(3).unwrap_err().code().as_str(), "invalid_data");
        assert_eq!(
            to_examples(&[], 3).unwrap_err().code().as_str(),
            "empty_input"
        );
    }

    #[test]
    fn app_propensities_are_used_and_one_sided_logs_still_convert() {
        let mut log = vec![entry(0, "t", 0, vec![]), entry(1, "t", 1, vec![])];
        let ex = to_examples(&log, 3).unwrap();
        assert!(ex.propensity.iter().all(|&p| p == PROPENSITY_FLOOR));
        log[0].propensity = Some(0.3);
        log[1].propensity = Some(0.6);
        assert_eq!(to_examples(&log, 3).unwrap().propensity, vec![0.3, 0.6]);
    }
}
