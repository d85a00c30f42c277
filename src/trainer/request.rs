//! What a training call is asked to do: the schedule (`TrainConfig`) and the request that
//! bundles it with the starting head, the objective and the data.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::feedback::Examples;
use crate::head::Head;
use crate::objective::ObjectiveConfig;
use crate::optim::AdamWConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: AdamWConfig,
    /// Stop after this many epochs without a better validation loss (needs a validation set;
    /// 0 disables early stopping, and the best validation epoch is still the one kept).
    pub patience: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 40,
            batch_size: 64,
            optimizer: AdamWConfig::default(),
            patience: 5,
            seed: 0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if !(1..=100_000).contains(&self.epochs) {
            return Err(Error::InvalidConfig(format!(
                "epochs = {} is outside 1..=100000",
                self.epochs
            )));
        }
        if !(1..=1 << 20).contains(&self.batch_size) {
            return Err(Error::InvalidConfig(format!(
                "batch_size = {} is outside 1..=1048576",
                self.batch_size
            )));
        }
        self.optimizer.validate()
    }
}

/// One training call: train `head` (its current weights are the starting point) on `train`
/// with `objective`, early-stopping on `val` if given, on the schedule `config`.
#[derive(Debug, Clone, Copy)]
pub struct TrainRequest<'a> {
    pub head: &'a Head,
    pub objective: &'a ObjectiveConfig,
    pub train: &'a Examples,
    pub val: Option<&'a Examples>,
    pub config: &'a TrainConfig,
}

impl<'a> TrainRequest<'a> {
    /// A request without a validation set.
    pub fn new(
        head: &'a Head,
        objective: &'a ObjectiveConfig,
        train: &'a Examples,
        config: &'a TrainConfig,
    ) -> Self {
        TrainRequest {
            head,
            objective,
            train,
            val: None,
            config,
        }
    }

    /// The same request, early-stopping on `val`.
    pub fn with_val(self, val: &'a Examples) -> Self {
        TrainRequest {
            val: Some(val),
            ..self
        }
    }
}
