//! What a training call reports: one record per epoch, and the run's summary.

use serde::{Deserialize, Serialize};

use crate::feedback::flip::FlipRates;
use crate::head::Head;

/// Which part of a two-part model an epoch trained (DESIGN §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainedPart {
    /// The head that sync exchanges (a model without a personal part has only this one).
    #[default]
    Shared,
    /// The user's own part, which never leaves the device.
    Personal,
}

/// What the trainer reports after each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    /// Epochs of this run (a personal part may train one run per candidate blend).
    pub epochs: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    /// Kish's effective sample size of the objective's importance weights.
    pub effective_sample_size: f64,
    #[serde(default)]
    pub part: TrainedPart,
    /// Share of the whole training call's planned epochs done, in (0, 1]: a call that trains
    /// both parts reports the personal runs first, then the shared one.
    #[serde(default)]
    pub fraction: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochReport>,
    /// Epoch whose weights were kept (best validation loss, or the last).
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub cancelled: bool,
    /// Flip rates used (configured or estimated), for objectives that use them.
    pub flip: Option<FlipRates>,
    pub steps: u64,
    /// The GPU device was lost during the run and training finished on the CPU.
    pub fell_back_to_cpu: bool,
}

impl TrainReport {
    pub fn final_loss(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.train_loss)
    }
}

/// A trained model: the reward head, plus the exposure head of `implicit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    pub head: Head,
    pub exposure_head: Option<Head>,
    pub report: TrainReport,
}
