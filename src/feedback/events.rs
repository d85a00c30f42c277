//! What an app reports for one exposure, and how it becomes an example row.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A user action on a shown answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Copy,
    Click,
    ThumbsUp,
    ThumbsDown,
    Regenerate,
}

impl Event {
    pub const NAMES: [&'static str; 5] =
        ["copy", "click", "thumbs_up", "thumbs_down", "regenerate"];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "copy" => Event::Copy,
            "click" => Event::Click,
            "thumbs_up" => Event::ThumbsUp,
            "thumbs_down" => Event::ThumbsDown,
            "regenerate" => Event::Regenerate,
            other => return Err(Error::unknown("event", other, &Self::NAMES)),
        })
    }

    /// Whether the action says the user liked the answer.
    pub fn is_positive(self) -> bool {
        matches!(self, Event::Copy | Event::Click | Event::ThumbsUp)
    }
}

/// How the answer was shown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    /// 0-based display position among the candidates.
    pub position: u32,
    /// Number of candidates shown together (≥ 1).
    pub candidates: u32,
}

/// One observation as the app reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub shown: Shown,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Time the answer was on screen, in milliseconds.
    #[serde(default)]
    pub dwell_ms: f64,
    /// Answer length in characters (or tokens), if known.
    #[serde(default)]
    pub length: f64,
}

/// The label part of an example row derived from an observation: `(observed, feedback,
/// explicit)`. The latest decisive event wins (a thumbs-down after a copy means "bad").
pub fn label_of(obs: &Observation) -> (f32, f32, f32) {
    match obs.events.last() {
        None => (0.0, 0.0, 0.0),
        Some(e) if e.is_positive() => (1.0, 1.0, 1.0),
        Some(_) => (0.0, 1.0, 0.0),
    }
}

/// Raw exposure features in [`super::EXPOSURE_FEATURES`] order (the propensity model
/// standardises them).
pub fn exposure_features(obs: &Observation) -> Result<[f32; 4]> {
    if obs.shown.candidates == 0 || obs.shown.position >= obs.shown.candidates {
        return Err(Error::InvalidData(format!(
            "position {} is not below candidates {}",
            obs.shown.position, obs.shown.candidates
        )));
    }
    if !(obs.dwell_ms.is_finite()
        && obs.dwell_ms >= 0.0
        && obs.length.is_finite()
        && obs.length >= 0.0)
    {
        return Err(Error::InvalidData(
            "dwell_ms and length must be finite and ≥ 0".into(),
        ));
    }
    Ok([
        obs.shown.position as f32,
        1.0 / obs.shown.candidates as f32,
        (obs.length as f32).ln_1p(),
        ((obs.dwell_ms / 1000.0) as f32).ln_1p(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_labels() {
        let mut o = Observation {
            shown: Shown {
                position: 1,
                candidates: 3,
            },
            events: vec![],
            dwell_ms: 5400.0,
            length: 120.0,
        };
        assert_eq!(label_of(&o), (0.0, 0.0, 0.0));
        o.events = vec![Event::Copy];
        assert_eq!(label_of(&o), (1.0, 1.0, 1.0));
        o.events = vec![Event::Copy, Event::ThumbsDown];
        assert_eq!(label_of(&o), (0.0, 1.0, 0.0));
        assert!(exposure_features(&o).unwrap().iter().all(|v| v.is_finite()));
        o.shown.position = 3;
        assert_eq!(
            exposure_features(&o).unwrap_err().code().as_str(),
            "invalid_data"
        );
        assert!(Event::parse("like").is_err());
    }
}
