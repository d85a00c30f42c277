//! Weight deltas: what a client sends instead of its weights. `delta = local − base`, clipped
//! to an L2 bound (so that no single client can move the global far, and as the first step of
//! differentially private aggregation), applied by the server as `global + mean(deltas)`, and
//! rebased by the client when a newer global arrives.
//!
//! On the wire a delta is a tacit-rm safetensors file (read and written by [`crate::store`])
//! whose tensors hold the differences and whose `__metadata__` adds `base_version` and
//! `n_examples`; `version` repeats the base version and `objective` names the objective.

use crate::error::{Error, Result};
use crate::head::{Head, HeadConfig};
use crate::objective::ObjectiveKind;
use crate::store::{self, Values, Weights};

use super::protocol::{META_BASE_VERSION, META_N_EXAMPLES};

/// A client's update: flat parameter differences in [`Head::tensors`] order, and the facts
/// the server needs to weigh and place it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub config: HeadConfig,
    pub values: Vec<f32>,
    /// The global version the difference was taken against.
    pub base_version: u64,
    /// Training examples behind the update: its weight in the example-weighted mean.
    pub n_examples: u64,
    pub objective: ObjectiveKind,
}

/// `local − base`, flat, after checking both heads have the same shape.
pub fn difference(local: &Head, base: &Head) -> Result<Vec<f32>> {
    same_shape(&local.config, &base.config)?;
    Ok(local
        .to_flat()
        .iter()
        .zip(base.to_flat())
        .map(|(l, b)| l - b)
        .collect())
}

/// L2 norm, accumulated in f64 so that a 50k-parameter sum does not lose the small terms.
pub fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Scales `values` down to an L2 norm of at most `bound` (never up) and returns the norm
/// before clipping. A bound that is not positive and finite is a configuration error.
pub fn clip(values: &mut [f32], bound: f64) -> Result<f64> {
    if !(bound.is_finite() && bound > 0.0) {
        return Err(Error::InvalidConfig(format!(
            "clip bound {bound} must be positive and finite"
        )));
    }
    let norm = l2_norm(values);
    if norm > bound {
        let scale = (bound / norm) as f32;
        values.iter_mut().for_each(|v| *v *= scale);
    }
    Ok(norm)
}

/// `base + delta`.
pub fn apply(base: &Head, delta: &[f32]) -> Result<Head> {
    let flat = base.to_flat();
    if flat.len() != delta.len() {
        return Err(Error::DimMismatch {
            what: "delta".into(),
            expected: flat.len(),
            got: delta.len(),
        });
    }
    let sum: Vec<f32> = flat.iter().zip(delta).map(|(b, d)| b + d).collect();
    crate::error::check::finite("base + delta", &sum)?;
    let mut out = base.clone();
    out.load_flat(&sum)?;
    Ok(out)
}

/// Moves local changes onto a newer global: `new_base + (local − old_base)`. What the user
/// trained since `old_base` is kept; what everyone else contributed arrives with `new_base`.
pub fn rebase(local: &Head, old_base: &Head, new_base: &Head) -> Result<Head> {
    same_shape(&new_base.config, &old_base.config)?;
    apply(new_base, &difference(local, old_base)?)
}

fn same_shape(a: &HeadConfig, b: &HeadConfig) -> Result<()> {
    if a != b {
        return Err(Error::IncompatibleWeights(format!(
            "heads differ in shape: {a:?} vs {b:?}"
        )));
    }
    Ok(())
}

impl Delta {
    /// The wire form: a safetensors file (see the module documentation).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut head = Head::init(&self.config, 0)?;
        head.load_flat(&self.values)?;
        let weights = Weights {
            head,
            exposure_head: None,
            objective: Some(self.objective),
            version: self.base_version,
            // The personal part never leaves the device.
            personal: None,
        };
        store::to_bytes_with_metadata(
            &weights,
            &[
                (META_BASE_VERSION, self.base_version.to_string()),
                (META_N_EXAMPLES, self.n_examples.to_string()),
            ],
        )
    }

    /// Reads a delta, refusing anything a server must not aggregate: unreadable bytes and
    /// missing keys ([`Error::CorruptWeights`]), zero examples ([`Error::InvalidData`]) and
    /// NaN/±Inf ([`Error::NonFinite`], told apart so that the server can answer 422).
    pub fn from_bytes(bytes: &[u8]) -> Result<Delta> {
        let (weights, meta) = store::parse(bytes, Values::Any)?;
        if weights.exposure_head.is_some() {
            return Err(Error::CorruptWeights(
                "a delta carries the reward head only, not an exposure head".into(),
            ));
        }
        if weights.personal.is_some() {
            return Err(Error::CorruptWeights(
                "a delta carries the shared head only; a personal part never leaves the device"
                    .into(),
            ));
        }
        let number = |key: &str| -> Result<u64> {
            let text = meta
                .get(key)
                .ok_or_else(|| Error::CorruptWeights(format!("delta metadata has no '{key}'")))?;
            // One spelling only: "+5" and "005" would hash differently from "5" for the
            // same update.
            store::parse_count(text).ok_or_else(|| {
                Error::CorruptWeights(format!(
                    "delta metadata '{key}' is not a count in decimal digits"
                ))
            })
        };
        let base_version = number(META_BASE_VERSION)?;
        let n_examples = number(META_N_EXAMPLES)?;
        if n_examples == 0 {
            return Err(Error::InvalidData(
                "a delta must summarise at least one example".into(),
            ));
        }
        let objective = weights
            .objective
            .ok_or_else(|| Error::CorruptWeights("delta metadata has no 'objective'".into()))?;
        let values = weights.head.to_flat();
        crate::error::check::finite("delta", &values)?;
        Ok(Delta {
            config: weights.head.config,
            values,
            base_version,
            n_examples,
            objective,
        })
    }
}
