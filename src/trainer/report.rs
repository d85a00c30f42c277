//! What a training call reports: one record per epoch, and the run's summary.

use serde::{Deserialize, Serialize};

use crate::feedback::flip::FlipRates;
use crate::head::Head;

/// What the trainer reports after each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    /// Kish's effective sample size of the objective's importance weights.
    pub effective_sample_size: f64,
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
