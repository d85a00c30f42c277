//! tacit-rm: a reward model that runs where the user is, learns from what the user does with
//! answers, and corrects the biases of that implicit feedback.
//!
//! The modules follow the data flow:
//! feedback → objective → trainer → head (on a backend) → store, with `sim` and `eval`
//! producing feedback with a known truth to prove the objectives.

pub mod backend;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod data;
pub mod error;
pub mod eval;
pub mod featurize;
pub mod feedback;
pub mod head;
pub mod math;
pub mod model;
pub mod objective;
pub mod optim;
pub mod personal;
pub mod rng;
pub mod sim;
pub mod store;
pub mod sync;
pub mod trainer;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use backend::Device;
pub use error::{Error, ErrorCode, Result};
pub use feedback::{Examples, Pair};
pub use head::{Activation, Head, HeadConfig};
pub use objective::{ObjectiveConfig, ObjectiveKind};
pub use trainer::{train, TrainConfig, TrainReport, TrainRequest, Trained};
