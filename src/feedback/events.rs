//! What an app reports for one exposure, and how it becomes an example row.

use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};

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
#[serde(deny_unknown_fields)]
pub struct Shown {
    /// 0-based display position among the candidates.
    pub position: u32,
    /// Number of candidates shown together (≥ 1).
    pub candidates: u32,
}

/// One observation, from the app to the log: what the app reports for one shown answer
/// (the browser's `observe` option object deserialises straight into it, camelCase, unknown
/// keys refused) and, once the model has given it its `seq`, a log entry, stored as is. It
/// carries everything needed to rebuild its example row, and nothing of the user's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Observation {
    /// Position in the log, assigned by the model (monotone, never reused); what an app
    /// passes is ignored.
    #[serde(default)]
    pub seq: u64,
    /// The app's id of the answer (kept so that the app can correlate; never interpreted).
    pub id: String,
    /// Answers shown together share a turn; a liked answer is then preferred over the others.
    #[serde(default)]
    pub turn: Option<String>,
    pub embedding: Vec<f32>,
    pub shown: Shown,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Time the answer was on screen, in milliseconds. (Logs stored before this type was
    /// one spelt it `dwell_ms`.)
    #[serde(default, alias = "dwell_ms")]
    pub dwell_ms: f64,
    /// Answer length in characters (or tokens), if known.
    #[serde(default)]
    pub length: f64,
    /// The app's own propensity for this exposure, if it has one (else it is fitted).
    #[serde(default)]
    pub propensity: Option<f32>,
}

impl Observation {
    /// Checks what `observe` must refuse before acknowledging an entry, for a head of width
    /// `dim`.
    pub fn validate(&self, dim: usize) -> Result<()> {
        check::len("observation embedding", dim, self.embedding.len())?;
        check::finite("observation embedding", &self.embedding)?;
        exposure_features(self)?;
        if let Some(p) = self.propensity {
            if !(p.is_finite() && p > 0.0 && p <= 1.0) {
                return Err(Error::InvalidData(format!(
                    "propensity {p} is outside (0, 1]"
                )));
            }
        }
        Ok(())
    }
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
    // Log-scaled in f64 before narrowing: a length or dwell beyond f32's range (3.4e38) would
    // become Inf in f32 and wedge every later training call; its logarithm is small.
    Ok([
        obs.shown.position as f32,
        1.0 / obs.shown.candidates as f32,
        obs.length.ln_1p() as f32,
        (obs.dwell_ms / 1000.0).ln_1p() as f32,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_dwells_beyond_f32_give_finite_features() {
        let o: Observation = serde_json::from_str(
            r#"{"id": "a", "embedding": [0.0], "shown": {"position": 0, "candidates": 1},
                "length": 1e39, "dwellMs": 1e42}"#,
        )
        .unwrap();
        let f = exposure_features(&o).unwrap();
        assert!(f.iter().all(|x| x.is_finite()), "{f:?}");
        // ln(1 + 1e39) and ln(1 + 1e39) (dwell in seconds), to f32 precision.
        assert!(
            (f[2] - 89.8008).abs() < 1e-3 && (f[3] - 89.8008).abs() < 1e-3,
            "{f:?}"
        );
    }

    #[test]
    fn events_map_to_labels() {
        let mut o = Observation {
            seq: 0,
            id: "a".into(),
            turn: None,
            embedding: vec![0.0],
            shown: Shown {
                position: 1,
                candidates: 3,
            },
            events: vec![],
            dwell_ms: 5400.0,
            length: 120.0,
            propensity: None,
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

    #[test]
    fn one_observation_type_reads_the_app_object_and_the_stored_log() {
        // What an app passes to `observe` (camelCase; seq left to the model).
        let app = r#"{"id": "a1", "turn": "t", "embedding": [0.5, -1], "shown": {"position": 0,
            "candidates": 2}, "events": ["copy"], "dwellMs": 1500, "length": 40,
            "propensity": 0.25}"#;
        let o: Observation = serde_json::from_str(app).unwrap();
        let expected = Observation {
            seq: 0,
            id: "a1".into(),
            turn: Some("t".into()),
            embedding: vec![0.5, -1.0],
            shown: Shown {
                position: 0,
                candidates: 2,
            },
            events: vec![Event::Copy],
            dwell_ms: 1500.0,
            length: 40.0,
            propensity: Some(0.25),
        };
        assert_eq!(o, expected);
        // Stored as is, and read back.
        let mut logged = expected.clone();
        logged.seq = 7;
        let stored = serde_json::to_string(&logged).unwrap();
        assert_eq!(
            serde_json::from_str::<Observation>(&stored).unwrap(),
            logged
        );
        // A log entry stored by earlier versions (flattened, `dwell_ms`) still reads.
        let old = r#"{"seq": 7, "id": "a1", "turn": "t", "embedding": [0.5, -1.0],
            "shown": {"position": 0, "candidates": 2}, "events": ["copy"], "dwell_ms": 1500.0,
            "length": 40.0, "propensity": 0.25}"#;
        assert_eq!(serde_json::from_str::<Observation>(old).unwrap(), logged);
        // Unknown keys are refused, at the top and inside `shown`.
        for bad in [
            r#"{"id": "a", "embedding": [], "shown": {"position": 0, "candidates": 1}, "dwel": 1}"#,
            r#"{"id": "a", "embedding": [], "shown": {"position": 0, "candidates": 1, "x": 1}}"#,
        ] {
            let err = serde_json::from_str::<Observation>(bad).unwrap_err();
            assert!(err.to_string().starts_with("unknown field"), "{err}");
        }
    }
}
